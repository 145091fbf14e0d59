"""The actor backend: each teacher replica is an async Ray actor with its own dynamic batcher."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from policies.service.batcher import DynamicBatcher
from policies.service.client import (
    LabelServiceHandle,
    PendingLabels,
    ReplicaGroup,
    Reply,
)
from policies.service.config import (
    MAX_CONCURRENT_CALLS,
    REPLICA_UNAVAILABLE,
    LabelServiceError,
    ServiceConfig,
)
from policies.service.metrics import ReplicaReport
from policies.service.replica import ReplicaCore
from policies.teacher import LabelRequest, TeacherSpec

logger = logging.getLogger(__name__)


class LabelReplica:
    """One teacher replica, run as an async Ray actor (all methods run on its event loop)."""

    def __init__(self, spec: TeacherSpec, config: ServiceConfig, replica: int) -> None:
        self._batcher: DynamicBatcher | None = None
        self._core = ReplicaCore(spec, config=config, replica=replica, enqueue=self._enqueue)
        self._batcher = DynamicBatcher(
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_wait_s,
            run_batch=self._core.run_batch,
            fail_batch=self._core.fail_batch,
        )

    def _enqueue(self, queued: Any) -> None:
        assert self._batcher is not None
        self._batcher.put(queued)

    async def label(self, request_ids: list[str], requests: list[LabelRequest]) -> Reply:
        """Return the responses to ``requests`` and the seconds this call spent in the replica."""
        start = time.perf_counter()
        responses = await self._core.label(request_ids, requests)
        return responses, time.perf_counter() - start

    async def describe(self) -> dict[str, Any]:
        """Return the teacher's identity and cost."""
        return self._core.describe()

    async def report(self) -> ReplicaReport:
        """Return this replica's metrics for the window so far."""
        return self._core.report()

    async def reset_metrics(self) -> None:
        """Start a new metrics window."""
        self._core.recorder.reset()


@functools.cache
def _remote_replica_class() -> Any:
    import ray

    return ray.remote(LabelReplica)


class ActorLabelHandle(LabelServiceHandle):
    """Picklable client of actor replicas: one Ray call per replica per ``submit``."""

    def __init__(self, actors: Sequence[Any]) -> None:
        self._actors = tuple(actors)

    @property
    def num_replicas(self) -> int:
        return len(self._actors)

    def _send(self, groups: dict[int, tuple[list[int], list[str], list[LabelRequest]]], size: int) -> PendingLabels:
        refs = []
        positions = []
        for replica, (indices, request_ids, requests) in groups.items():
            refs.append(self._actors[replica].label.remote(request_ids, requests))
            positions.append(indices)
        return _ActorPendingLabels(refs, positions, size)


class _ActorPendingLabels(PendingLabels):
    def __init__(self, refs: list[Any], positions: list[list[int]], size: int) -> None:
        super().__init__(positions, size)
        self._refs = refs

    def done(self) -> bool:
        import ray

        ready, _ = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)
        return len(ready) == len(self._refs)

    def _get_replies(self, timeout_s: float | None) -> list[Reply]:
        import ray

        try:
            return ray.get(self._refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(
                f"label service timed out: no response to {self.num_requests} request(s) within {timeout_s} s; "
                "raise timeout_s, or retry with the same request ids"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise LabelServiceError(REPLICA_UNAVAILABLE) from exc

    async def _await_replies(self) -> list[Reply]:
        import asyncio

        import ray

        try:
            return list(await asyncio.gather(*self._refs))
        except ray.exceptions.RayActorError as exc:
            raise LabelServiceError(REPLICA_UNAVAILABLE) from exc


class ActorReplicaGroup(ReplicaGroup):
    """``num_replicas`` async Ray actors, started and waited for together."""

    def __init__(self, spec: TeacherSpec, config: ServiceConfig, *, start_timeout_s: float) -> None:
        import ray

        options = {
            "num_cpus": config.num_cpus_per_replica,
            "max_concurrency": MAX_CONCURRENT_CALLS,
        }
        replica_class = _remote_replica_class().options(**options)
        self._actors = [replica_class.remote(spec, config, replica) for replica in range(config.num_replicas)]
        try:
            self.teacher_info = ray.get(
                [actor.describe.remote() for actor in self._actors], timeout=start_timeout_s
            )[0]
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise TimeoutError(
                f"{config.num_replicas} label replicas reserving {config.num_cpus_per_replica} CPU(s) each did "
                f"not start within {start_timeout_s} s; the cluster has {ray.cluster_resources().get('CPU', 0)} "
                "CPUs. Lower num_cpus_per_replica or num_replicas, or raise start_timeout_s"
            ) from None
        except ray.exceptions.RayActorError as exc:
            self.shutdown()
            raise LabelServiceError(f"a label replica failed to start: {exc}") from exc
        self.handle = ActorLabelHandle(self._actors)

    def reports(self) -> list[ReplicaReport]:
        import ray

        return ray.get([actor.report.remote() for actor in self._actors])

    def reset_metrics(self) -> None:
        import ray

        ray.get([actor.reset_metrics.remote() for actor in self._actors])

    def shutdown(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
