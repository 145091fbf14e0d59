"""``PlannerSpec``: the picklable recipe of a privileged planner for one native world."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.planners.base import MAX_DEPTH, LookaheadPlanner, SearchKnobs
from policies.planners.foraging import ForagingPlanner
from policies.planners.predator_prey import PredatorPreyPlanner
from policies.planners.spread import SpreadPlanner
from sim.registry import make_world, world_options
from sim.rollout.spec import WorldSpec

PLANNERS: dict[str, type[LookaheadPlanner]] = {
    "foraging_v0": ForagingPlanner,
    "predator_prey_v0": PredatorPreyPlanner,
    "spread_v0": SpreadPlanner,
}
"""The planner class of each native world."""

PLACEHOLDER_AGENTS = 2
"""Agents of the world built only to read its rules when ``num_agents`` is not given."""


@dataclasses.dataclass(frozen=True)
class PlannerSpec:
    """A privileged lookahead planner for one native world, built where it runs.

    The planner reads the world's rules (map size, radii, rewards) from a world built
    with ``world_options``. The map size of a native world defaults to a function of
    ``num_agents``, so give either ``world_options["map_size"]`` or ``num_agents``;
    ``from_world_spec`` copies both from a ``WorldSpec``.

    ``world_options`` may be given as a mapping. The spec stores it as a tuple of
    ``(key, value)`` pairs sorted by key, as ``WorldSpec`` does, so it stays hashable.

    Example:
        >>> spec = PlannerSpec("spread_v0", {"map_size": 16}, depth=2)
        >>> teacher = spec.build()
        >>> teacher.teacher_id, teacher.depth
        ('planner/spread_v0', 2)
    """

    world: str
    """Native world name, such as ``"foraging_v0"``."""
    world_options: tuple[tuple[str, Any], ...] = ()
    """Options of the world the planner labels, as passed to ``sim.make_world``."""
    num_agents: int | None = None
    """Agents of the labelled world, needed when ``world_options`` does not set ``map_size``."""
    depth: int | None = None
    """D, search depth in steps and the cost knob, or ``None`` for the planner's ``default_depth``."""
    temperature: float | None = None
    """Softmax temperature over Q values in reward units, or ``None`` for the planner's ``default_temperature``."""
    discount: float = 0.95
    """Per-step discount in (0, 1) of rewards and terminal values."""
    neighbours: int = 8
    """Nearest goals each agent considers per round of the assignment."""

    def __post_init__(self) -> None:
        if self.world not in PLANNERS:
            raise ValueError(
                f"no planner for world {self.world!r}; planners exist for {', '.join(sorted(PLANNERS))}"
            )
        items = self.world_options.items() if isinstance(self.world_options, Mapping) else self.world_options
        options = tuple(sorted((tuple(item) for item in items), key=lambda item: item[0]))
        object.__setattr__(self, "world_options", options)
        valid = world_options(self.world)
        unknown = sorted(key for key, _ in options if key not in valid)
        if unknown:
            raise TypeError(
                f"{self.world}: unknown world option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
            )
        if self.num_agents is None and "map_size" not in dict(options):
            raise ValueError(
                f"planner for {self.world}: the map size is unknown; set world_options['map_size'] or "
                "num_agents to the labelled world's values, or use PlannerSpec.from_world_spec"
            )
        if self.num_agents is not None:
            _require_int(self.world, "num_agents", self.num_agents, minimum=1, maximum=None)
        if self.depth is not None:
            _require_int(self.world, "depth", self.depth, minimum=1, maximum=MAX_DEPTH)
        if self.temperature is not None:
            _require_number(self.world, "temperature", self.temperature, low=0.0, high=math.inf)
        _require_number(self.world, "discount", self.discount, low=0.0, high=1.0)
        _require_int(self.world, "neighbours", self.neighbours, minimum=1, maximum=None)

    @classmethod
    def from_world_spec(cls, world: WorldSpec, **knobs: Any) -> PlannerSpec:
        """Return the planner of the native world ``world`` describes, with ``knobs`` set.

        Raises:
            ValueError: ``world`` is an adapted PettingZoo env, which has no planner.
        """
        if world.entry_point is not None:
            raise ValueError(
                f"{world.name} is an adapted PettingZoo env ({world.entry_point}); planners exist only "
                f"for the native worlds {', '.join(sorted(PLANNERS))}"
            )
        return cls(world.name, world.options, num_agents=world.num_agents, **knobs)

    def build(self) -> LookaheadPlanner:
        """Build the planner.

        Raises:
            ValueError, TypeError: a world option is out of range or of the wrong type.
        """
        num_agents = PLACEHOLDER_AGENTS if self.num_agents is None else self.num_agents
        world = make_world(self.world, num_agents=num_agents, **dict(self.world_options))
        planner_class = PLANNERS[self.world]
        knobs = SearchKnobs(
            depth=planner_class.default_depth if self.depth is None else self.depth,
            temperature=planner_class.default_temperature if self.temperature is None else float(self.temperature),
            discount=float(self.discount),
            neighbours=self.neighbours,
        )
        return planner_class(world, knobs)


def _require_int(world: str, name: str, value: Any, *, minimum: int, maximum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"planner for {world}: {name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"planner for {world}: {name} must be {bounds}, got {value}")


def _require_number(world: str, name: str, value: Any, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"planner for {world}: {name} must be a number, got {value!r}")
    if not math.isfinite(value) or not low < value < high:
        raise ValueError(f"planner for {world}: {name} must be in ({low}, {high}), got {value}")
