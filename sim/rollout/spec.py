"""Specs of worlds and shards, and the split of a population into shards.

Specs are frozen, picklable descriptions that cross process boundaries. Each worker calls
``build()`` on its side, so live worlds never travel between processes.

Seeding: world ``i`` of a population gets ``derive_seed(base_seed, i)``, a value drawn
from ``np.random.SeedSequence(base_seed, spawn_key=(i,))``. It depends only on the base
seed and the world's index, never on the number of workers, so a population yields the
same trajectories however it is sharded. Unlike ``base_seed + i``, runs with nearby base
seeds do not share worlds.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim.adapter import from_pettingzoo
from sim.registry import available_worlds, make_world, world_options
from sim.world import World

SEED_LIMIT = 2**63
"""Derived seeds lie in ``[0, SEED_LIMIT)``: 63 bits, so a population of a million worlds
repeats a seed with a probability below 1e-6, and every seed fits a signed 64-bit integer."""

_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def derive_seed(base_seed: int, index: int) -> int:
    """Return the seed of stream ``index`` under ``base_seed``, in ``[0, SEED_LIMIT)``.

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
        True
    """
    _require_int("base_seed", base_seed, minimum=0)
    _require_int("index", index, minimum=0)
    state = np.random.SeedSequence(base_seed, spawn_key=(index,)).generate_state(1, np.uint64)
    return int(state[0]) % SEED_LIMIT


@dataclasses.dataclass(frozen=True)
class WorldSpec:
    """A world to build inside a worker: a native world or an adapted PettingZoo env.

    A native world (``entry_point is None``) is built with
    ``sim.make_world(name, num_agents=..., seed=..., **options)``. An external world calls
    the ``"module:function"`` entry point with ``options`` as keyword arguments and wraps
    the returned ``pettingzoo.ParallelEnv`` with ``sim.from_pettingzoo``.

    ``options`` may be given as a mapping. The spec stores it as a tuple of
    ``(key, value)`` pairs sorted by key, so it stays hashable when the values are.

    Example:
        >>> spec = WorldSpec("foraging_v0", num_agents=100, seed=3, options={"max_steps": 50})
        >>> spec.options
        (('max_steps', 50),)
        >>> spec.build().num_agents
        100
    """

    name: str
    """A native world name such as ``"foraging_v0"``, or the name given to an adapted env."""
    num_agents: int
    """Agent rows in the world, which an adapted env's agent count must match."""
    seed: int = 0
    """Seed of the world's first reset. Later resets continue its random stream."""
    options: tuple[tuple[str, Any], ...] = ()
    """World options (native) or keyword arguments of the entry point (adapted env)."""
    entry_point: str | None = None
    """``"module:function"`` that returns a ``pettingzoo.ParallelEnv``, or ``None`` for a native world."""
    max_steps: int | None = None
    """Episode limit passed to ``sim.from_pettingzoo``. Native worlds take ``max_steps`` in options."""

    def __post_init__(self) -> None:
        items = self.options.items() if isinstance(self.options, Mapping) else self.options
        options = tuple(sorted((tuple(item) for item in items), key=lambda item: item[0]))
        keys = [key for key, _ in options]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: options repeat a key, got keys {keys}")
        object.__setattr__(self, "options", options)
        _require_int("num_agents", self.num_agents, minimum=1)
        _require_int("seed", self.seed, minimum=0)
        if self.entry_point is None:
            self._validate_native()
        else:
            self._validate_entry_point()

    def _validate_native(self) -> None:
        if self.name not in available_worlds():
            raise ValueError(
                f"unknown world {self.name!r}; available worlds: {', '.join(available_worlds())}. "
                "For a PettingZoo env, set entry_point='module:function'"
            )
        if self.max_steps is not None:
            raise ValueError(
                f"{self.name}: max_steps={self.max_steps} applies only to adapted PettingZoo envs; "
                "pass a native world's episode length as options={'max_steps': ...}"
            )
        valid = world_options(self.name)
        unknown = sorted(key for key, _ in self.options if key not in valid)
        if unknown:
            raise TypeError(
                f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(valid))}"
            )

    def _validate_entry_point(self) -> None:
        if not isinstance(self.entry_point, str) or not _ENTRY_POINT.match(self.entry_point):
            raise ValueError(
                f"entry_point must read 'module:function', for example "
                f"'pettingzoo.mpe.simple_spread_v3:parallel_env', got {self.entry_point!r}"
            )
        if self.max_steps is not None:
            _require_int("max_steps", self.max_steps, minimum=1)

    def replace(self, **changes: Any) -> WorldSpec:
        """Return a copy with ``changes`` applied, validated like a new spec."""
        return dataclasses.replace(self, **changes)

    def build(self) -> World:
        """Build the world.

        A native world's first ``reset()`` without a seed uses ``self.seed``. An adapted
        env gets its seed from ``reset(seed=self.seed)``, which ``RolloutWorker`` calls
        for every world.

        Raises:
            ValueError: an adapted env has a different number of agents than ``num_agents``.
            ImportError, AttributeError: the entry point's module or function is missing.
        """
        if self.entry_point is None:
            return make_world(self.name, num_agents=self.num_agents, seed=self.seed, **dict(self.options))

        module_name, function_name = self.entry_point.split(":")
        factory = getattr(importlib.import_module(module_name), function_name)
        env = factory(**dict(self.options))
        world = from_pettingzoo(env, name=self.name, max_steps=self.max_steps)
        if world.num_agents != self.num_agents:
            raise ValueError(
                f"{self.name}: {self.entry_point} built an env with {world.num_agents} agents, "
                f"but the spec expects num_agents={self.num_agents}; set num_agents to "
                f"{world.num_agents} or change the env's arguments"
            )
        return world


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """The worlds one rollout worker holds, in population order."""

    worlds: tuple[WorldSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "worlds", tuple(self.worlds))
        if not self.worlds:
            raise ValueError("a shard needs at least one world, got none")
        for index, world in enumerate(self.worlds):
            if not isinstance(world, WorldSpec):
                raise TypeError(f"shard world {index} must be a WorldSpec, got {type(world).__name__}")

    @property
    def num_agents(self) -> int:
        """Agent rows over all worlds of the shard."""
        return sum(world.num_agents for world in self.worlds)


def split_population(
    template: WorldSpec,
    *,
    total_agents: int,
    num_workers: int,
    agents_per_world: int | None = None,
) -> tuple[ShardSpec, ...]:
    """Split a population into worlds and the worlds into one shard per worker.

    World ``i`` is ``template`` with ``num_agents=agents_per_world`` and seed
    ``derive_seed(template.seed, i)``. Workers get contiguous blocks of worlds whose
    sizes differ by at most one, so concatenating the shards restores population order.

    Args:
        template: the world that every shard repeats. Its ``seed`` is the population's base seed.
        total_agents: agents in the whole population.
        num_workers: shards to make, one per rollout worker.
        agents_per_world: agent rows per world, or ``None`` for ``template.num_agents``.

    Raises:
        TypeError: an argument is not an integer.
        ValueError: a count is below 1, ``total_agents`` is not a multiple of
            ``agents_per_world``, or there are fewer worlds than workers.

    Example:
        >>> shards = split_population(
        ...     WorldSpec("foraging_v0", num_agents=1, seed=0),
        ...     total_agents=300, num_workers=2, agents_per_world=100)
        >>> [len(shard.worlds) for shard in shards]
        [2, 1]
    """
    if agents_per_world is None:
        agents_per_world = template.num_agents
    _require_int("total_agents", total_agents, minimum=1)
    _require_int("num_workers", num_workers, minimum=1)
    _require_int("agents_per_world", agents_per_world, minimum=1)

    if total_agents % agents_per_world:
        raise ValueError(
            f"total_agents={total_agents} is not a multiple of agents_per_world={agents_per_world}; "
            "choose agents_per_world that divides total_agents, or change total_agents to "
            f"{total_agents - total_agents % agents_per_world} or "
            f"{total_agents - total_agents % agents_per_world + agents_per_world}"
        )
    num_worlds = total_agents // agents_per_world
    if num_workers > num_worlds:
        raise ValueError(
            f"num_workers={num_workers} exceeds the {num_worlds} world(s) of "
            f"total_agents={total_agents} at agents_per_world={agents_per_world}, and every "
            f"worker needs a world; use num_workers <= {num_worlds}, or agents_per_world <= "
            f"{total_agents // num_workers} that divides total_agents"
        )

    worlds = [
        template.replace(num_agents=agents_per_world, seed=derive_seed(template.seed, index))
        for index in range(num_worlds)
    ]
    # The first num_worlds % num_workers shards take one extra world, as np.array_split does.
    shards = []
    start = 0
    for worker in range(num_workers):
        stop = start + num_worlds // num_workers + (worker < num_worlds % num_workers)
        shards.append(ShardSpec(tuple(worlds[start:stop])))
        start = stop
    return tuple(shards)


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
