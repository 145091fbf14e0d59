"""The rollout worker: one shard of the population, stepped with a batched policy.

A worker builds its worlds and their policies from specs and resets each world with its
spec's seed. When a world's episode ends, the worker resets it without a seed, which
continues its random stream. So a world's trajectory depends only on its spec and the
policy spec. The same class runs in-process (``SerialBackend``) and as a Ray actor
(``RayBackend``).

Shape letters: T steps in one ``sample`` call, N agent rows of one world, O the
observation shape.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from sim.rollout.policy import NO_ACTION, BatchedPolicy, PolicySpec
from sim.rollout.spec import ShardSpec, derive_seed
from sim.world import Step, World

logger = logging.getLogger(__name__)

POLICY_SEED_STREAM = 0
"""A world's policy is seeded with ``derive_seed(world_seed, POLICY_SEED_STREAM)``."""


@dataclasses.dataclass(frozen=True)
class WorldInfo:
    """Static facts about one world of a worker, for callers that size models or buffers."""

    name: str
    seed: int
    num_agents: int
    observation_shape: tuple[int, ...]
    num_actions: int


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """``T`` consecutive steps of one world, where step ``t`` acts on ``obs[t]``.

    Episodes may end inside the window. The step after the one that ends the world's
    episode starts a new episode and has ``episode_start`` set.
    """

    world_seed: int
    """Seed of the world's spec, which identifies the world within its population."""
    obs: np.ndarray
    """(T, N, *O) float32 observations the actions were chosen from. Dead rows are zero."""
    actions: np.ndarray
    """(T, N) int64 actions, ``NO_ACTION`` (-1) for rows that were not alive."""
    rewards: np.ndarray
    """(T, N) float32 rewards of each step."""
    terminated: np.ndarray
    """(T, N) bool, true on the step an agent's life ended."""
    truncated: np.ndarray
    """(T, N) bool, true for agents alive when the episode hit its time limit."""
    alive: np.ndarray
    """(T, N) bool, the rows that acted at step ``t``."""
    episode_start: np.ndarray
    """(T,) bool, true where ``obs[t]`` is the first observation of an episode."""
    next_obs: np.ndarray
    """(N, *O) float32 observation the next ``sample`` starts from (after any reset)."""
    states: tuple[dict[str, np.ndarray], ...] | None = None
    """``world.state()`` seen with each ``obs[t]`` (T entries), or ``None`` unless requested."""


@dataclasses.dataclass(frozen=True)
class RolloutStats:
    """Counts and phase timers of one ``run`` call, over one or more workers.

    A world episode's return is the mean over agent rows of each row's summed reward in
    that episode. Seconds are wall-clock time. ``env_seconds`` and ``policy_seconds`` are
    summed over workers, so combined over K workers they may exceed ``wall_seconds``.
    """

    agent_steps: int
    """Actions taken by alive agents."""
    world_steps: int
    """``World.step`` calls."""
    episodes: int
    """World episodes that ended."""
    episode_return_sum: float
    """Sum of the returns of the ended episodes."""
    env_seconds: float
    """Time in ``World.step``, ``World.reset`` and ``World.action_mask``, plus per-step bookkeeping."""
    policy_seconds: float
    """Time in ``BatchedPolicy.act``."""
    wall_seconds: float
    """Elapsed time of the whole call."""

    @property
    def mean_episode_return(self) -> float | None:
        """Mean return of the ended episodes, or ``None`` when no episode ended."""
        return self.episode_return_sum / self.episodes if self.episodes else None

    @property
    def agent_steps_per_second(self) -> float:
        """Throughput: ``agent_steps`` over ``wall_seconds``."""
        return self.agent_steps / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and the derived values, for a metrics file."""
        values = dataclasses.asdict(self)
        values["mean_episode_return"] = self.mean_episode_return
        values["agent_steps_per_second"] = self.agent_steps_per_second
        return values

    @classmethod
    def combine(cls, stats: list[RolloutStats], *, wall_seconds: float) -> RolloutStats:
        """Sum the counts and timers of ``stats``, taking the caller's ``wall_seconds``."""
        return cls(
            agent_steps=sum(item.agent_steps for item in stats),
            world_steps=sum(item.world_steps for item in stats),
            episodes=sum(item.episodes for item in stats),
            episode_return_sum=sum(item.episode_return_sum for item in stats),
            env_seconds=sum(item.env_seconds for item in stats),
            policy_seconds=sum(item.policy_seconds for item in stats),
            wall_seconds=wall_seconds,
        )


class _Counters:
    """Mutable totals of one call, frozen into ``RolloutStats`` at its end."""

    def __init__(self) -> None:
        self.agent_steps = self.world_steps = self.episodes = 0
        self.episode_return_sum = self.env_seconds = self.policy_seconds = 0.0
        self.start = time.perf_counter()

    def freeze(self) -> RolloutStats:
        return RolloutStats(
            agent_steps=self.agent_steps,
            world_steps=self.world_steps,
            episodes=self.episodes,
            episode_return_sum=self.episode_return_sum,
            env_seconds=self.env_seconds,
            policy_seconds=self.policy_seconds,
            wall_seconds=time.perf_counter() - self.start,
        )


class RolloutWorker:
    """Holds a shard of the population and steps all of its worlds with a batched policy.

    Args:
        shard: the worlds to build and step.
        policy: built once per world with a seed derived from the world's seed.
        worker_index: this worker's position among the backend's workers, for logs.

    Example:
        >>> from sim.rollout import RandomPolicySpec, ShardSpec, WorldSpec
        >>> shard = ShardSpec((WorldSpec("foraging_v0", num_agents=20, seed=1),))
        >>> worker = RolloutWorker(shard, RandomPolicySpec())
        >>> [trajectory.actions.shape for trajectory in worker.sample(5)]
        [(5, 20)]
        >>> worker.run(10).agent_steps
        200
    """

    def __init__(self, shard: ShardSpec, policy: PolicySpec, *, worker_index: int = 0) -> None:
        if not isinstance(shard, ShardSpec):
            raise TypeError(f"shard must be a ShardSpec, got {type(shard).__name__}")
        self.shard = shard
        self.worker_index = worker_index
        self._worlds: list[World] = [spec.build() for spec in shard.worlds]
        self._policies: list[BatchedPolicy] = []
        self.set_policy(policy)

        # Episode state of each world: the next observation and running per-row returns.
        self._obs = [world.reset(seed=spec.seed) for world, spec in zip(self._worlds, shard.worlds)]
        self._episode_start = [True] * len(self._worlds)
        self._episode_returns = [np.zeros(world.num_agents, dtype=np.float64) for world in self._worlds]
        logger.info(
            "rollout worker %d started: %d world(s), %d agents",
            worker_index, len(self._worlds), shard.num_agents,
        )

    def describe(self) -> tuple[WorldInfo, ...]:
        """Return the static facts of each world, in shard order."""
        return tuple(
            WorldInfo(
                name=world.name,
                seed=spec.seed,
                num_agents=world.num_agents,
                observation_shape=tuple(world.observation_shape),
                num_actions=world.num_actions,
            )
            for world, spec in zip(self._worlds, self.shard.worlds)
        )

    def set_policy(self, policy: PolicySpec) -> None:
        """Rebuild every world's policy from ``policy``, with the same per-world seeds."""
        if not isinstance(policy, PolicySpec):
            raise TypeError(
                f"policy must be a PolicySpec, an object with build(world, *, seed), "
                f"got {type(policy).__name__}"
            )
        self._policies = [
            policy.build(world, seed=derive_seed(spec.seed, POLICY_SEED_STREAM))
            for world, spec in zip(self._worlds, self.shard.worlds)
        ]

    def set_weights(self, weights: Any) -> None:
        """Pass ``weights`` to every world's policy through its ``set_weights``.

        Raises:
            TypeError: the current policy has no ``set_weights`` method.
        """
        for policy in self._policies:
            if not callable(getattr(policy, "set_weights", None)):
                raise TypeError(
                    f"{type(policy).__name__} has no set_weights(weights) method; "
                    "send a new policy spec with set_policy instead"
                )
            policy.set_weights(weights)

    def run(self, num_steps: int) -> RolloutStats:
        """Step every world ``num_steps`` times and return only the statistics."""
        _require_num_steps(num_steps)
        counters = _Counters()
        for _ in range(num_steps):
            for index in range(len(self._worlds)):
                self._step_world(index, counters)
        return counters.freeze()

    def sample(self, num_steps: int, *, with_state: bool = False) -> list[Trajectory]:
        """Step every world ``num_steps`` times and return one trajectory per world.

        Args:
            num_steps: T, the steps of each trajectory.
            with_state: also record ``world.state()`` before each step, for teachers.
        """
        _require_num_steps(num_steps)
        counters = _Counters()
        buffers = [_TrajectoryBuffer(world, num_steps, with_state) for world in self._worlds]
        for t in range(num_steps):
            for index, (world, buffer) in enumerate(zip(self._worlds, buffers)):
                buffer.record_before(t, self._obs[index], world, self._episode_start[index])
                actions, step = self._step_world(index, counters)
                buffer.record_after(t, actions, step)
        return [
            buffer.finish(spec.seed, self._obs[index])
            for index, (buffer, spec) in enumerate(zip(buffers, self.shard.worlds))
        ]

    def _step_world(self, index: int, counters: _Counters) -> tuple[np.ndarray, Step]:
        """Act and step world ``index`` once, and reset it if its episode ended."""
        world = self._worlds[index]
        start = time.perf_counter()
        action_mask = world.action_mask()
        masked = time.perf_counter()
        actions = self._policies[index].act(self._obs[index], world.alive, action_mask)  # (N,)
        acted = time.perf_counter()
        counters.agent_steps += int(np.count_nonzero(world.alive))
        step = world.step(actions)
        counters.world_steps += 1
        self._episode_returns[index] += step.reward

        # Auto-reset: reset() without a seed continues the world's random stream.
        self._episode_start[index] = world.episode_over
        if world.episode_over:
            counters.episodes += 1
            counters.episode_return_sum += float(self._episode_returns[index].mean())
            self._episode_returns[index][:] = 0.0
            self._obs[index] = world.reset()
        else:
            self._obs[index] = step.obs
        done = time.perf_counter()

        counters.policy_seconds += acted - masked
        counters.env_seconds += (masked - start) + (done - acted)
        return actions, step


class _TrajectoryBuffer:
    """Preallocated arrays for one world's trajectory of ``num_steps`` steps."""

    def __init__(self, world: World, num_steps: int, with_state: bool) -> None:
        rows = (num_steps, world.num_agents)
        self.obs = np.zeros((*rows, *world.observation_shape), dtype=np.float32)  # (T, N, *O)
        self.actions = np.zeros(rows, dtype=np.int64)  # (T, N)
        self.rewards = np.zeros(rows, dtype=np.float32)  # (T, N)
        self.terminated = np.zeros(rows, dtype=bool)  # (T, N)
        self.truncated = np.zeros(rows, dtype=bool)  # (T, N)
        self.alive = np.zeros(rows, dtype=bool)  # (T, N)
        self.episode_start = np.zeros(num_steps, dtype=bool)  # (T,)
        self.states: list[dict[str, np.ndarray]] | None = [] if with_state else None

    def record_before(self, t: int, obs: np.ndarray, world: World, episode_start: bool) -> None:
        self.obs[t] = obs
        self.alive[t] = world.alive
        self.episode_start[t] = episode_start
        if self.states is not None:
            self.states.append(world.state())

    def record_after(self, t: int, actions: np.ndarray, step: Step) -> None:
        self.actions[t] = np.where(self.alive[t], actions, NO_ACTION)
        self.rewards[t] = step.reward
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated

    def finish(self, world_seed: int, next_obs: np.ndarray) -> Trajectory:
        return Trajectory(
            world_seed=world_seed,
            obs=self.obs,
            actions=self.actions,
            rewards=self.rewards,
            terminated=self.terminated,
            truncated=self.truncated,
            alive=self.alive,
            episode_start=self.episode_start,
            next_obs=next_obs.copy(),
            states=None if self.states is None else tuple(self.states),
        )


def _require_num_steps(num_steps: Any) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
