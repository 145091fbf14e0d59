"""Names of the native worlds and the factory that builds them."""

from __future__ import annotations

import inspect
from typing import Any

from sim.world import World
from sim.worlds.foraging import ForagingWorld
from sim.worlds.predator_prey import PredatorPreyWorld
from sim.worlds.spread import SpreadWorld

WORLDS: dict[str, type[World]] = {
    ForagingWorld.name: ForagingWorld,
    PredatorPreyWorld.name: PredatorPreyWorld,
    SpreadWorld.name: SpreadWorld,
}


def available_worlds() -> list[str]:
    """Return the versioned names of the native worlds, sorted."""
    return sorted(WORLDS)


def world_class(name: str) -> type[World]:
    """Return the class registered under ``name``, or raise listing the valid names."""
    if name not in WORLDS:
        raise ValueError(
            f"unknown world {name!r}; available worlds: {', '.join(available_worlds())}"
        )
    return WORLDS[name]


def world_options(name: str) -> dict[str, Any]:
    """Return the options of world ``name`` with their defaults (``num_agents`` has none)."""
    signature = inspect.signature(world_class(name).__init__)
    return {
        param.name: param.default
        for param in signature.parameters.values()
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.name not in ("seed", "num_agents")
    }


def make_world(name: str, *, num_agents: int, seed: int | None = None, **options: Any) -> World:
    """Build the native world ``name`` with ``num_agents`` agent rows.

    Args:
        name: a name from ``available_worlds()``, such as ``"foraging_v0"``.
        num_agents: agents in the world; must fit on the map.
        seed: seeds the world's generator; the first ``reset()`` without a seed uses it.
        **options: world options such as ``map_size``, ``view_radius`` or ``max_steps``;
            see each world class.

    Raises:
        ValueError: unknown name, or an option value out of range.
        TypeError: an unknown option, or an option of the wrong type.

    Example:
        >>> import numpy as np, sim
        >>> world = sim.make_world("foraging_v0", num_agents=1000, seed=0)
        >>> obs = world.reset()
        >>> obs.shape
        (1000, 7, 7, 3)
        >>> step = world.step(np.zeros(1000, dtype=np.int64))
        >>> step.reward.shape
        (1000,)
    """
    cls = world_class(name)
    valid = world_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
        )
    return cls(num_agents=num_agents, seed=seed, **options)
