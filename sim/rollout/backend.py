"""Rollout backends: one interface over K rollout workers, in-process or as Ray actors.

Both backends hold one ``RolloutWorker`` per shard and return results in shard order, so
concatenating them gives population order. For the same shards and policy spec they
return identical trajectories, because each world's randomness comes from its own spec.
"""

from __future__ import annotations

import abc
import functools
import logging
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

from sim.rollout.policy import PolicySpec
from sim.rollout.spec import ShardSpec
from sim.rollout.worker import RolloutStats, RolloutWorker, Trajectory, WorldInfo

logger = logging.getLogger(__name__)

WORKER_ENV_VARS: Mapping[str, str] = types.MappingProxyType(
    {
        # Worlds allocate multi-megabyte arrays every step. By default glibc malloc hands
        # such blocks back to the OS, and the next step faults their pages in again.
        # These raise the mmap threshold to its 64-bit maximum of 32 MiB (mallopt(3)) and
        # keep up to 128 MiB of freed heap per actor. Measured with glibc 2.36 on a 2-core
        # machine, one actor stepping two 10,000-agent foraging_v0 worlds with random
        # actions: 15-25% more agent-steps/s. Setting either variable turns off glibc's
        # dynamic thresholds, so set both: the trim threshold alone halved throughput.
        # Other allocators ignore these variables.
        "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
        "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
    }
)
"""Environment variables ``RayBackend`` sets in its actor processes by default."""


class RolloutBackend(abc.ABC):
    """K rollout workers driven as one. Use it as a context manager or call ``close()``."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int:
        """K, the number of workers (one per shard)."""

    @property
    @abc.abstractmethod
    def worlds(self) -> tuple[WorldInfo, ...]:
        """Static facts of every world, in population order."""

    @abc.abstractmethod
    def sample(self, num_steps: int, *, with_state: bool = False) -> list[Trajectory]:
        """Step every world ``num_steps`` times and return one trajectory per world, in population order.

        ``RayBackend`` returns read-only arrays, which Ray maps from its object store
        without a copy. Copy an array before writing to it.
        """

    @abc.abstractmethod
    def run(self, num_steps: int) -> RolloutStats:
        """Step every world ``num_steps`` times and return statistics combined over workers."""

    @abc.abstractmethod
    def set_policy(self, policy: PolicySpec) -> None:
        """Rebuild every world's policy from ``policy`` on every worker."""

    @abc.abstractmethod
    def set_weights(self, weights: Any) -> None:
        """Send ``weights`` once to every worker and load them into its policies."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the workers. Calling it again does nothing."""

    def __enter__(self) -> RolloutBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _raise_if_closed(self) -> None:
        # An open backend always has a worker, because it needs at least one shard.
        if self.num_workers == 0:
            raise RuntimeError(f"this {type(self).__name__} is closed; build a new one with make_backend")


class SerialBackend(RolloutBackend):
    """Every worker in this process, stepped one after another: for tests and debugging."""

    def __init__(self, shards: Sequence[ShardSpec], policy: PolicySpec) -> None:
        shards = _check_shards(shards)
        self._workers = [
            RolloutWorker(shard, policy, worker_index=index) for index, shard in enumerate(shards)
        ]
        self._worlds = tuple(info for worker in self._workers for info in worker.describe())

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    @property
    def worlds(self) -> tuple[WorldInfo, ...]:
        return self._worlds

    def sample(self, num_steps: int, *, with_state: bool = False) -> list[Trajectory]:
        self._raise_if_closed()
        return [
            trajectory
            for worker in self._workers
            for trajectory in worker.sample(num_steps, with_state=with_state)
        ]

    def run(self, num_steps: int) -> RolloutStats:
        self._raise_if_closed()
        start = time.perf_counter()
        stats = [worker.run(num_steps) for worker in self._workers]
        return RolloutStats.combine(stats, wall_seconds=time.perf_counter() - start)

    def set_policy(self, policy: PolicySpec) -> None:
        self._raise_if_closed()
        for worker in self._workers:
            worker.set_policy(policy)

    def set_weights(self, weights: Any) -> None:
        self._raise_if_closed()
        for worker in self._workers:
            worker.set_weights(weights)

    def close(self) -> None:
        self._workers = []


class RayBackend(RolloutBackend):
    """One Ray actor per shard, each reserving ``num_cpus_per_worker`` CPUs.

    Ray must already be initialised: entry points own ``ray.init()``, so this class never
    starts or joins a cluster by itself. Ray does not restart an actor that dies, so the
    next call raises ``ray.exceptions.RayActorError``.

    Args:
        shards: one shard per actor.
        policy: built inside each actor, once per world.
        num_cpus_per_worker: CPUs each actor reserves. Fractions pack several actors
            on one CPU.
        start_timeout_s: seconds to wait for all actors to build their worlds before
            giving up, for example when the cluster lacks the CPUs they reserve.
        env_vars: environment variables of the actor processes, added to the job's
            ``runtime_env``. Pass ``{}`` to leave the environment as the job sets it.

    Raises:
        RuntimeError: Ray is not initialised.
        TimeoutError: the actors did not start within ``start_timeout_s``.
    """

    def __init__(
        self,
        shards: Sequence[ShardSpec],
        policy: PolicySpec,
        *,
        num_cpus_per_worker: float = 1.0,
        start_timeout_s: float = 300.0,
        env_vars: Mapping[str, str] = WORKER_ENV_VARS,
    ) -> None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                "RayBackend needs a running Ray instance; call ray.init() first "
                "(ray.init(num_cpus=...) on one machine, ray.init(address='auto') on a cluster), "
                "or use the serial backend"
            )
        shards = _check_shards(shards)
        if isinstance(num_cpus_per_worker, bool) or not isinstance(num_cpus_per_worker, (int, float)):
            raise TypeError(f"num_cpus_per_worker must be a number, got {num_cpus_per_worker!r}")
        if not num_cpus_per_worker > 0:
            raise ValueError(f"num_cpus_per_worker must be > 0, got {num_cpus_per_worker}")
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self._warn_if_short_of_cpus(len(shards))

        # Start every actor, then wait for all of them at once.
        options: dict[str, Any] = {"num_cpus": self.num_cpus_per_worker}
        if env_vars:
            options["runtime_env"] = {"env_vars": dict(env_vars)}
        worker_class = _remote_worker_class().options(**options)
        self._actors = [
            worker_class.remote(shard, policy, worker_index=index) for index, shard in enumerate(shards)
        ]
        try:
            infos = ray.get([actor.describe.remote() for actor in self._actors], timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise TimeoutError(
                f"{len(shards)} rollout actors reserving {self.num_cpus_per_worker} CPU(s) each did "
                f"not start within {start_timeout_s} s; the cluster has "
                f"{ray.cluster_resources().get('CPU', 0)} CPUs. Lower num_cpus_per_worker or the "
                "number of shards, or raise start_timeout_s"
            ) from None
        except BaseException:
            self.close()
            raise
        self._worlds = tuple(info for worker_infos in infos for info in worker_infos)
        logger.info(
            "ray rollout backend started: %d actors, %s CPU(s) each, %d worlds",
            len(self._actors), self.num_cpus_per_worker, len(self._worlds),
        )

    def _warn_if_short_of_cpus(self, num_workers: int) -> None:
        import ray

        requested = num_workers * self.num_cpus_per_worker
        available = ray.cluster_resources().get("CPU", 0.0)
        if requested > available:
            # A warning, not an error: an autoscaling cluster may add nodes.
            logger.warning(
                "%d rollout actors reserve %s CPUs but the cluster has %s; "
                "actors wait until CPUs free up",
                num_workers, requested, available,
            )

    @property
    def num_workers(self) -> int:
        return len(self._actors)

    @property
    def worlds(self) -> tuple[WorldInfo, ...]:
        return self._worlds

    def sample(self, num_steps: int, *, with_state: bool = False) -> list[Trajectory]:
        import ray

        self._raise_if_closed()
        refs = [actor.sample.remote(num_steps, with_state=with_state) for actor in self._actors]
        return [trajectory for trajectories in ray.get(refs) for trajectory in trajectories]

    def run(self, num_steps: int) -> RolloutStats:
        import ray

        self._raise_if_closed()
        start = time.perf_counter()
        stats = ray.get([actor.run.remote(num_steps) for actor in self._actors])
        return RolloutStats.combine(stats, wall_seconds=time.perf_counter() - start)

    def set_policy(self, policy: PolicySpec) -> None:
        import ray

        self._raise_if_closed()
        ray.get([actor.set_policy.remote(policy) for actor in self._actors])

    def set_weights(self, weights: Any) -> None:
        import ray

        self._raise_if_closed()

        # One copy goes to the object store, and every actor receives the resolved value.
        weights_ref = ray.put(weights)
        ray.get([actor.set_weights.remote(weights_ref) for actor in self._actors])

    def close(self) -> None:
        import ray

        if self._actors:
            logger.info("ray rollout backend closing %d actors", len(self._actors))
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


BACKENDS: dict[str, type[RolloutBackend]] = {"ray": RayBackend, "serial": SerialBackend}


def make_backend(kind: str, shards: Sequence[ShardSpec], policy: PolicySpec, **options: Any) -> RolloutBackend:
    """Build the rollout backend ``kind`` over ``shards``.

    Args:
        kind: ``"serial"`` (in-process) or ``"ray"`` (one actor per shard).
        shards: one shard per worker, as ``split_population`` returns them.
        policy: the policy spec every worker builds.
        **options: keyword arguments of the backend class, such as ``RayBackend``'s
            ``num_cpus_per_worker``.

    Raises:
        ValueError: unknown ``kind``.
        TypeError: an option the backend does not take.

    Example:
        >>> from sim.rollout import RandomPolicySpec, WorldSpec, split_population
        >>> shards = split_population(WorldSpec("spread_v0", num_agents=10),
        ...                           total_agents=20, num_workers=2)
        >>> with make_backend("serial", shards, RandomPolicySpec()) as backend:
        ...     backend.run(3).agent_steps
        60
    """
    if kind not in BACKENDS:
        raise ValueError(f"unknown rollout backend {kind!r}; valid kinds: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[kind](shards, policy, **options)


@functools.cache
def _remote_worker_class() -> Any:
    import ray

    return ray.remote(RolloutWorker)


def _check_shards(shards: Sequence[ShardSpec]) -> tuple[ShardSpec, ...]:
    shards = tuple(shards)
    if not shards:
        raise ValueError("a rollout backend needs at least one shard, got none; see split_population")
    for index, shard in enumerate(shards):
        if not isinstance(shard, ShardSpec):
            raise TypeError(f"shard {index} must be a ShardSpec, got {type(shard).__name__}")
    return shards
