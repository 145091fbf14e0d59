"""The label service as callers see it: ``LabelService`` owns the replicas, handles call them.

A ``LabelServiceHandle`` is picklable, so rollout workers (Ray actors) can receive one and
call the teacher replicas directly. Every request carries a request id, given by the caller
or drawn fresh. A retry with the same id returns the same labels without labelling or
counting the request again, as long as the replica still caches it (``cache_size``).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Generator, Sequence
from typing import Any

from policies.service.config import (
    LabelServiceError,
    ServiceConfig,
    new_request_id,
    replica_for,
)
from policies.service.metrics import ReplicaReport, ServiceMetrics, merge_reports
from policies.teacher import LabelRequest, Labels, TeacherSpec

logger = logging.getLogger(__name__)

Reply = tuple[list[Any], float]
"""A replica's reply to one call: one response (``Labels`` or an exception) per request,
and the seconds the call spent inside the replica."""


class PendingLabels(abc.ABC):
    """Labels on their way back. Call ``result()`` to block, or ``await`` it in async code."""

    def __init__(self, positions: list[list[int]], size: int) -> None:
        self._positions = positions
        self.num_requests = size
        self._submitted_at = time.perf_counter()
        self.latency_s: float | None = None
        """Seconds from ``submit`` until every response arrived, once they have."""
        self.replica_s: float | None = None
        """Maximum time one replica spent on this call, once every response arrived."""

    @abc.abstractmethod
    def done(self) -> bool:
        """Return whether every response has arrived."""

    def result(self, timeout_s: float | None = None) -> list[Labels]:
        """Block until the labels arrive and return them in request order.

        Raises:
            LabelInputError: a request was invalid for the teacher, or its id was reused.
            LabelError: the teacher produced invalid labels.
            LabelServiceError: the service is shut down or a replica died.
            TimeoutError: no response within ``timeout_s`` seconds.
            Exception: any other error the teacher raised, with the request id in its message.
        """
        return self._assemble(self._get_replies(timeout_s))

    def __await__(self) -> Generator[Any, None, list[Labels]]:
        replies = yield from self._await_replies().__await__()
        return self._assemble(replies)

    @abc.abstractmethod
    def _get_replies(self, timeout_s: float | None) -> list[Reply]: ...

    @abc.abstractmethod
    async def _await_replies(self) -> list[Reply]: ...

    def _assemble(self, replies: list[Reply]) -> list[Labels]:
        self.latency_s = time.perf_counter() - self._submitted_at
        self.replica_s = max((seconds for _, seconds in replies), default=0.0)
        responses: list[Any] = [None] * self.num_requests
        for indices, (group_responses, _) in zip(self._positions, replies, strict=True):
            for index, response in zip(indices, group_responses, strict=True):
                responses[index] = response
        for response in responses:
            if isinstance(response, BaseException):
                raise response
        return responses


class LabelServiceHandle(abc.ABC):
    """A picklable client of a running label service.

    ``label`` blocks; ``submit`` returns ``PendingLabels`` at once, so a caller can overlap
    labelling with its own work, or ``await`` it inside an async actor.
    """

    @property
    @abc.abstractmethod
    def num_replicas(self) -> int:
        """Teacher replicas behind this handle."""

    def label(
        self,
        requests: Sequence[LabelRequest],
        *,
        request_ids: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[Labels]:
        """Label ``requests`` and return their labels in order.

        Args:
            requests: requests to label; each is one batch of states from one world.
            request_ids: one id per request. Reuse the ids when retrying, so the service
                returns the labels it already made. Fresh ids are drawn when omitted.
            timeout_s: seconds to wait for the responses; ``None`` waits forever.

        Raises:
            TypeError: a request is not a ``LabelRequest``, or an id is not a string.
            ValueError: the ids are empty, repeated within the call, or not one per request.
            See ``PendingLabels.result`` for the errors of labelling.
        """
        return self.submit(requests, request_ids=request_ids).result(timeout_s)

    def submit(self, requests: Sequence[LabelRequest], *, request_ids: Sequence[str] | None = None) -> PendingLabels:
        """Send ``requests`` and return at once; see ``label`` for the arguments and errors."""
        requests, request_ids = _check_call(requests, request_ids)

        # One call per replica, each carrying the requests whose ids hash to it.
        groups: dict[int, tuple[list[int], list[str], list[LabelRequest]]] = {}
        for index, (request_id, request) in enumerate(zip(request_ids, requests)):
            indices, ids, group = groups.setdefault(replica_for(request_id, self.num_replicas), ([], [], []))
            indices.append(index)
            ids.append(request_id)
            group.append(request)
        return self._send(groups, len(requests))

    @abc.abstractmethod
    def _send(self, groups: dict[int, tuple[list[int], list[str], list[LabelRequest]]], size: int) -> PendingLabels:
        """Send each replica its group as ``{replica: (positions, ids, requests)}``."""


class ReplicaGroup(abc.ABC):
    """The running replicas of one backend, owned by a ``LabelService``."""

    handle: LabelServiceHandle
    teacher_info: dict[str, Any]

    @abc.abstractmethod
    def reports(self) -> list[ReplicaReport]:
        """Return every replica's metrics, in replica order."""

    @abc.abstractmethod
    def reset_metrics(self) -> None:
        """Start a new metrics window on every replica."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every replica."""


class LabelService:
    """Teacher replicas behind dynamic batching, with idempotent request ids and metrics.

    Build one with ``LabelService.start``; pass ``service.handle`` to the processes that
    request labels. Ray must already be initialised: entry points own ``ray.init()``.

    Example:
        >>> service = LabelService.start(FixedTeacherSpec(), max_wait_ms=1.0)  # doctest: +SKIP
        >>> labels = service.handle.label([LabelRequest(obs)])                # doctest: +SKIP
        >>> service.metrics().labels_per_s                                    # doctest: +SKIP
        >>> service.shutdown()                                                # doctest: +SKIP
    """

    def __init__(self, group: ReplicaGroup, config: ServiceConfig) -> None:
        self._group: ReplicaGroup | None = group
        self.config = config
        self.handle = group.handle
        self.teacher_info = group.teacher_info
        """The teacher's ``describe()`` from replica 0 at start: identity, shapes and cost."""

    @classmethod
    def start(
        cls,
        spec: TeacherSpec,
        *,
        backend: str = "actor",
        num_replicas: int = 1,
        max_batch_size: int = 1024,
        max_wait_ms: float = 0.0,
        num_cpus_per_replica: float = 1.0,
        cache_size: int = 4096,
        start_timeout_s: float = 120.0,
    ) -> LabelService:
        """Start ``num_replicas`` replicas of the teacher ``spec`` builds and wait until they run.

        The keyword arguments are the fields of ``ServiceConfig``, which documents them.

        Raises:
            RuntimeError: Ray is not initialised.
            TypeError, ValueError: an invalid setting.
            TimeoutError: the replicas did not start within ``start_timeout_s``.
            LabelServiceError: a replica failed to build its teacher.
        """
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                "LabelService needs a running Ray instance; call ray.init() first "
                "(ray.init(num_cpus=...) on one machine, ray.init(address='auto') on a cluster)"
            )
        if not hasattr(spec, "build"):
            raise TypeError(f"spec must be a TeacherSpec with a build() method, got {type(spec).__name__}")
        config = ServiceConfig(
            backend=backend,
            num_replicas=num_replicas,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            num_cpus_per_replica=num_cpus_per_replica,
            cache_size=cache_size,
        )
        _warn_if_short_of_cpus(config)

        group: ReplicaGroup
        if config.backend == "serve":
            from policies.service.serve_backend import ServeReplicaGroup

            group = ServeReplicaGroup(spec, config, start_timeout_s=start_timeout_s)
        else:
            from policies.service.actor_backend import ActorReplicaGroup

            group = ActorReplicaGroup(spec, config, start_timeout_s=start_timeout_s)
        logger.info(
            "label service started: backend %s, %d replica(s), max_batch_size %d, max_wait_ms %s, teacher %s",
            config.backend, config.num_replicas, config.max_batch_size, config.max_wait_ms,
            group.teacher_info.get("teacher_id"),
        )
        return cls(group, config)

    def label(
        self,
        requests: Sequence[LabelRequest],
        *,
        request_ids: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[Labels]:
        """Label ``requests``; see ``LabelServiceHandle.label``."""
        self._running_group()
        return self.handle.label(requests, request_ids=request_ids, timeout_s=timeout_s)

    def submit(self, requests: Sequence[LabelRequest], *, request_ids: Sequence[str] | None = None) -> PendingLabels:
        """Send ``requests`` and return at once; see ``LabelServiceHandle.submit``."""
        self._running_group()
        return self.handle.submit(requests, request_ids=request_ids)

    def metrics(self) -> ServiceMetrics:
        """Collect a metrics snapshot from every replica."""
        return merge_reports(self._running_group().reports(), backend=self.config.backend)

    def reset_metrics(self) -> None:
        """Start a new metrics window on every replica, for example after a warm-up.

        The caches keep their entries, so a retry after a reset is still served from them.
        """
        self._running_group().reset_metrics()

    def shutdown(self) -> None:
        """Stop the replicas. Calls still in flight fail with ``LabelServiceError``; a second call does nothing."""
        if self._group is None:
            return
        logger.info("label service shutting down: backend %s", self.config.backend)
        group, self._group = self._group, None
        group.shutdown()

    @property
    def running(self) -> bool:
        """Whether ``shutdown`` has not been called yet."""
        return self._group is not None

    def __enter__(self) -> LabelService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _running_group(self) -> ReplicaGroup:
        if self._group is None:
            raise LabelServiceError("this label service is shut down; start a new one with LabelService.start")
        return self._group


def _check_call(
    requests: Sequence[LabelRequest], request_ids: Sequence[str] | None
) -> tuple[list[LabelRequest], list[str]]:
    if isinstance(requests, LabelRequest):
        raise TypeError("requests must be a sequence of LabelRequest; wrap a single request in a list")
    requests = list(requests)
    for index, request in enumerate(requests):
        if not isinstance(request, LabelRequest):
            raise TypeError(f"requests[{index}] must be a LabelRequest, got {type(request).__name__}")

    if request_ids is None:
        return requests, [new_request_id() for _ in requests]
    if isinstance(request_ids, str):
        raise TypeError("request_ids must be a sequence of strings, one per request, got a single string")
    request_ids = list(request_ids)
    if len(request_ids) != len(requests):
        raise ValueError(f"got {len(request_ids)} request ids for {len(requests)} requests; pass one id per request")
    for index, request_id in enumerate(request_ids):
        if not isinstance(request_id, str):
            raise TypeError(f"request_ids[{index}] must be a str, got {type(request_id).__name__}")
        if not request_id:
            raise ValueError(f"request_ids[{index}] is empty; use a non-empty id such as new_request_id()")
    if len(set(request_ids)) != len(request_ids):
        repeated = next(request_id for request_id in request_ids if request_ids.count(request_id) > 1)
        raise ValueError(
            f"request id {repeated!r} appears more than once in one call; every request in a call needs its own id"
        )
    return requests, request_ids


def _warn_if_short_of_cpus(config: ServiceConfig) -> None:
    import ray

    requested = config.num_replicas * config.num_cpus_per_replica
    available = ray.cluster_resources().get("CPU", 0.0)
    if requested > available:
        # A warning, not an error: an autoscaling cluster may add nodes.
        logger.warning(
            "%d label replicas reserve %s CPUs but the cluster has %s; replicas wait until CPUs free up",
            config.num_replicas, requested, available,
        )
