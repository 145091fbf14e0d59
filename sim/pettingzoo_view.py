"""PettingZoo ``ParallelEnv`` view of the native worlds.

``parallel_env(name)`` wraps one batched ``World`` so that PettingZoo code (its API and
seed tests, wrappers, trainers) can drive it with per-agent dicts. The view stays thin.
Observations are views of rows of the world's (N, *O) array, or of one compacted copy
once some agents have died. Actions go back to the world as one (N,) array, so the only
per-agent Python work is building the dicts.

PettingZoo never lets an agent come back once it left ``agents``. Worlds that respawn
agents are therefore viewed with respawning off, and the batched ``World`` from
``sim.make_world`` remains the way to run them with respawns. Shape letters follow
``sim.world``: N agents, A actions, O the observation shape, and S the length of the
flat state vector.
"""

from __future__ import annotations

import re
import warnings
from itertools import compress
from typing import Any

import numpy as np
import pettingzoo
from gymnasium import spaces

from sim.registry import available_worlds, make_world, world_options
from sim.world import ActionError, World
from sim.worlds.grid import GridWorld

DEFAULT_NUM_AGENTS = 32
"""Agents in a view built without ``num_agents``. The worlds' default density of one agent
per 20 cells gives them a 26 x 26 map, small enough for an ``"ansi"`` picture."""

RENDER_MODES = ("ansi",)
"""Render modes besides ``None``. ``"ansi"`` returns a text picture of the grid."""

ENV_NAMESPACE = "shepherd"
"""PettingZoo registry namespace of the native worlds, as in ``"shepherd/foraging-v0"``."""

_ENTRY_POINT = f"{__name__}:parallel_env"
_EMPTY_GLYPH = "."


class WorldParallelEnv(pettingzoo.ParallelEnv[str, np.ndarray, int]):
    """A PettingZoo ``ParallelEnv`` that steps one batched ``World``.

    ``possible_agents`` are the world's ``agent_names`` in row order, and ``agents`` is
    the subset alive now, in the same order. Each step returns observations, rewards,
    terminations, truncations and infos for exactly the agents that acted in it, so an
    agent that dies gets its last observation, and it is absent from ``agents`` from then
    on. The episode is over when ``agents`` is empty. Use ``parallel_env(name)`` to build
    one from a world name.

    Args:
        world: the world to view. The view owns it from here on: stepping or resetting
            it directly would desynchronise ``agents``.
        render_mode: ``None`` or ``"ansi"``.

    Raises:
        ValueError: ``render_mode`` is not supported, or the world respawns agents.
    """

    metadata = {"name": "shepherd_world", "render_modes": list(RENDER_MODES)}

    def __init__(self, world: World, *, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            supported = ", ".join(repr(mode) for mode in (None, *RENDER_MODES))
            raise ValueError(f"{world.name}: render_mode must be one of {supported}, got {render_mode!r}")
        if render_mode == "ansi" and not isinstance(world, GridWorld):
            raise ValueError(
                f"{world.name}: render_mode 'ansi' needs a grid world, got {type(world).__name__}"
            )
        _reject_respawn(world.name, getattr(world, "respawn_delay", None))

        self.world = world
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "name": world.name}
        self.possible_agents: list[str] = list(world.agent_names)
        self.agents: list[str] = []
        self._row_of = {name: row for row, name in enumerate(self.possible_agents)}

        # Rows of the agents in self.agents, in the same order. It is None while every row is
        # alive, so the common case skips fancy indexing.
        self._rows: np.ndarray | None = None
        self._all_rows = np.arange(world.num_agents)  # (N,)
        self._actions = np.zeros(world.num_agents, dtype=np.int64)  # (N,)

        state_size = sum(array.size for array in world.state().values())
        self.state_space = spaces.Box(-np.inf, np.inf, shape=(state_size,), dtype=np.float32)  # (S,)
        self._observation_spaces: dict[str, spaces.Box] = {}
        self._action_spaces: dict[str, spaces.Discrete] = {}

    # Spaces.

    def observation_space(self, agent: str) -> spaces.Box:
        """Box of one agent's float32 observation, the same object on every call."""
        space = self._observation_spaces.get(agent)
        if space is None:
            self._check_agent_name(agent)
            # Every channel of the grid worlds is a count, a flag or a fraction, so 0 bounds it below.
            space = spaces.Box(0.0, np.inf, shape=self.world.observation_shape, dtype=np.float32)
            self._observation_spaces[agent] = space
        return space

    def action_space(self, agent: str) -> spaces.Discrete:
        """Discrete space of one agent's actions, the same object on every call."""
        space = self._action_spaces.get(agent)
        if space is None:
            self._check_agent_name(agent)
            space = spaces.Discrete(self.world.num_actions)
            self._action_spaces[agent] = space
        return space

    # Episode.

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start a new episode and return the observations and infos of the agents in ``agents``.

        Args:
            seed: reseeds the world; ``None`` continues its current generator.
            options: accepted for the PettingZoo API and ignored, because the native
                worlds take no reset options.
        """
        obs = self.world.reset(seed=seed)  # (N, *O)
        alive = self.world.alive
        if alive.all():
            self._rows = None
            self.agents = list(self.possible_agents)
        else:
            self._rows = np.flatnonzero(alive)
            self.agents = list(compress(self.possible_agents, alive.tolist()))

        return self._per_agent(self.agents, obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Step every agent in ``agents`` with its action from ``actions``.

        Raises:
            ActionError: ``actions`` names an unknown agent or one not in ``agents``,
                misses an agent in ``agents``, or contains a value that is not an integer
                in ``[0, A)``.
            EpisodeEndedError: the episode is over; call ``reset`` first.
        """
        self._fill_actions(actions)
        result = self.world.step(self._actions)

        # Outputs: one entry for each agent that acted, in the order of self.agents.
        acted = self.agents
        obs = self._per_agent(acted, result.obs)
        reward = self._per_agent(acted, result.reward, to_python=True)
        terminated = self._per_agent(acted, result.terminated, to_python=True)
        truncated = self._per_agent(acted, result.truncated, to_python=True)
        infos = {agent: {} for agent in acted}

        self._update_agents(result.alive)
        return obs, reward, terminated, truncated, infos

    def state(self) -> np.ndarray:
        """Return the (S,) float32 global state: the raveled arrays of ``World.state()`` in key order."""
        arrays = [array.ravel() for array in self.world.state().values()]
        return np.concatenate(arrays, dtype=np.float32)

    def render(self) -> str | None:
        """Return a text picture of the grid in ``"ansi"`` mode.

        Without a render mode, warn and return ``None``, as Gymnasium environments do.
        """
        if self.render_mode is None:
            warnings.warn(
                f"{self.world.name}: render() was called without a render mode; "
                f"pass render_mode='ansi' to parallel_env() to get a text picture",
                stacklevel=2,
            )
            return None
        return _render_ansi(self.world, num_alive=len(self.agents))

    def close(self) -> None:
        """Release nothing: the view holds no windows, processes or files."""

    # Helpers.

    def _check_agent_name(self, agent: str) -> None:
        if agent not in self._row_of:
            raise ValueError(
                f"{self.world.name}: unknown agent {agent!r}; possible_agents are "
                f"{self.possible_agents[0]!r} ... {self.possible_agents[-1]!r}"
            )

    def _per_agent(self, names: list[str], array: np.ndarray, *, to_python: bool = False) -> dict[str, Any]:
        """Map ``names`` to the rows of the (N, ...) ``array`` that belong to them.

        Observations stay row views into ``array``; ``to_python`` turns scalars into
        Python floats and bools for PettingZoo's reward and termination dicts.
        """
        if self._rows is not None:
            array = array[self._rows]
        if array.dtype == bool and not array.any():
            return dict.fromkeys(names, False)
        return dict(zip(names, array.tolist() if to_python else array))

    def _fill_actions(self, actions: dict[str, int]) -> None:
        """Check ``actions`` against ``agents`` and copy them into the (N,) action array."""
        # Fast path: keys in the order of self.agents, as {agent: ... for agent in env.agents} builds them.
        if list(actions) == self.agents:
            rows = self._all_rows if self._rows is None else self._rows
        else:
            rows = self._rows_of_actions(actions)
        if not actions:
            return

        expected = f"each action must be one integer in [0, {self.world.num_actions})"
        try:
            values = np.asarray(list(actions.values()))
        except ValueError:
            raise ActionError(f"{self.world.name}: {expected}, got actions of different shapes") from None
        if values.shape != (len(actions),) or not np.issubdtype(values.dtype, np.integer):
            raise ActionError(
                f"{self.world.name}: {expected}, got {len(actions)} actions that form an array of "
                f"dtype {values.dtype} and shape {values.shape}"
            )
        out_of_range = (values < 0) | (values >= self.world.num_actions)
        if out_of_range.any():
            index = int(np.argmax(out_of_range))
            agent = self.possible_agents[rows[index]]
            raise ActionError(
                f"{self.world.name}: action {int(values[index])} of agent {agent!r} is out of range "
                f"[0, {self.world.num_actions})"
            )
        # Rows of dead agents keep stale values, which World.step ignores.
        self._actions[rows] = values

    def _rows_of_actions(self, actions: dict[str, int]) -> np.ndarray:
        """Return the rows of the agents named in ``actions``, which must be exactly ``agents``."""
        name = self.world.name
        try:
            rows = np.fromiter(map(self._row_of.__getitem__, actions), dtype=np.intp, count=len(actions))
        except KeyError as error:
            raise ActionError(
                f"{name}: actions contain unknown agent {error.args[0]!r}; possible_agents are "
                f"{self.possible_agents[0]!r} ... {self.possible_agents[-1]!r}"
            ) from None

        alive = self.world.alive
        if not alive[rows].all():
            agent = self.possible_agents[rows[np.argmin(alive[rows])]]
            raise ActionError(
                f"{name}: agent {agent!r} is not in agents because it was terminated or truncated "
                "(or the episode is over); send actions only for the agents in env.agents"
            )
        # Dict keys are distinct, so with no dead agent among them, equal counts mean equal sets.
        if len(actions) != len(self.agents):
            missing = [agent for agent in self.agents if agent not in actions]
            raise ActionError(
                f"{name}: actions are missing for {len(missing)} agent(s) in agents, first "
                f"{missing[0]!r}; every agent in env.agents must act on each step"
            )
        return rows

    def _update_agents(self, alive: np.ndarray) -> None:
        """Drop the agents whose rows are no longer alive after a step."""
        rows = self._all_rows if self._rows is None else self._rows
        still_alive = alive[rows]  # (len(agents),) bool
        if np.count_nonzero(still_alive) != np.count_nonzero(alive):
            acted = np.zeros_like(alive)
            acted[rows] = True
            revived = int(np.flatnonzero(alive & ~acted)[0])
            raise RuntimeError(
                f"{self.world.name}: agent {self.possible_agents[revived]!r} came back to life, which "
                "PettingZoo forbids; turn respawning off in the world's options"
            )
        if still_alive.all():
            return
        self.agents = list(compress(self.agents, still_alive.tolist()))
        self._rows = rows[still_alive]


def parallel_env(
    name: str, *, num_agents: int = DEFAULT_NUM_AGENTS, render_mode: str | None = None, **options: Any
) -> WorldParallelEnv:
    """Build the native world ``name`` with ``sim.make_world`` and return its PettingZoo view.

    Args:
        name: a name from ``sim.available_worlds()``, such as ``"foraging_v0"``.
        num_agents: agents in the world, ``DEFAULT_NUM_AGENTS`` (32) unless given. The
            view's own ``num_agents`` property is PettingZoo's: the number alive now.
        render_mode: ``None`` or ``"ansi"``.
        **options: world options for ``sim.make_world``, such as ``map_size`` or
            ``max_steps``. A world with a ``respawn_delay`` option gets ``None`` (no
            respawning) unless given.

    Raises:
        ValueError: unknown world name, an option out of range, an unsupported
            ``render_mode``, or a ``respawn_delay`` other than ``None``.
        TypeError: an unknown option, or an option of the wrong type.

    Example:
        >>> import sim
        >>> env = sim.parallel_env("foraging_v0", num_agents=4, map_size=8)
        >>> obs, infos = env.reset(seed=0)
        >>> sorted(obs)
        ['forager_0', 'forager_1', 'forager_2', 'forager_3']
        >>> obs["forager_0"].shape
        (7, 7, 3)
    """
    if "respawn_delay" in world_options(name):
        _reject_respawn(name, options.get("respawn_delay"))
        options["respawn_delay"] = None
    world = make_world(name, num_agents=num_agents, **options)
    return WorldParallelEnv(world, render_mode=render_mode)


def register_pettingzoo_envs() -> list[str]:
    """Register every native world in PettingZoo's parallel registry and return the ids.

    The ids read ``"shepherd/<world>-v<version>"``, for example ``"shepherd/foraging-v0"``
    for ``foraging_v0``; PettingZoo also resolves ``"shepherd/foraging_v0"`` to it.
    A repeated call changes nothing and raises no warning.

    Example:
        >>> import pettingzoo, sim
        >>> "shepherd/spread-v0" in sim.register_pettingzoo_envs()
        True
        >>> env = pettingzoo.make("parallel", "shepherd/spread-v0", num_agents=4)
    """
    # Registration is an explicit call, not a side effect of ``import sim``: it writes to
    # PettingZoo's process-wide registry, and this package keeps its imports free of side effects.
    env_ids = []
    for name in available_worlds():
        spec = pettingzoo.EnvSpec(id=_env_id(name), entry_point=_ENTRY_POINT, kwargs={"name": name})
        if pettingzoo.parallel_registry.get(spec.id) != spec:
            pettingzoo.register("parallel", spec.id, entry_point=spec.entry_point, kwargs=spec.kwargs)
        env_ids.append(spec.id)
    return env_ids


def _env_id(world_name: str) -> str:
    """PettingZoo id of a world: ``"foraging_v0"`` becomes ``"shepherd/foraging-v0"``."""
    match = re.fullmatch(r"(?P<base>\w+?)_v(?P<version>\d+)", world_name)
    if match is None:
        raise ValueError(f"world name {world_name!r} does not end in a version such as '_v0'")
    return f"{ENV_NAMESPACE}/{match['base']}-v{match['version']}"


def _reject_respawn(world_name: str, respawn_delay: Any) -> None:
    if respawn_delay is not None:
        raise ValueError(
            f"{world_name}: the PettingZoo view cannot respawn agents, because PettingZoo forbids "
            f"an agent to return to env.agents once it has left; got respawn_delay={respawn_delay!r}. "
            "Leave respawn_delay unset here, or use sim.make_world() for the batched World, "
            "which respawns"
        )


def _render_ansi(world: GridWorld, *, num_alive: int) -> str:
    """Draw the grid as text: one glyph per cell for its first non-empty channel, then a legend."""
    # Glyphs: the first letter of each channel name that no earlier channel took.
    glyphs = []
    for channel in world.channel_names[1:]:
        glyph = next((letter for letter in channel if letter.isalpha() and letter not in glyphs), "?")
        glyphs.append(glyph)

    filled = world.interior[..., 1:] > 0  # (H, W, C-1)
    first = np.argmax(filled, axis=-1)  # (H, W)
    cells = np.where(filled.any(axis=-1), np.array(glyphs)[first], _EMPTY_GLYPH)
    visible_channels = sorted(set(first[filled.any(axis=-1)].tolist()))

    header = f"{world.name} step {world.episode_step}/{world.max_steps}, {num_alive} agents alive"
    legend = " ".join(f"{glyphs[channel]}={world.channel_names[channel + 1]}" for channel in visible_channels)
    rows = ["".join(row) for row in cells.tolist()]
    return "\n".join([header, *rows, legend])
