"""The Ray Serve backend: each teacher replica is a one-replica Serve application.

Serve's ``@serve.batch`` batches calls, not states, so each call carries one request, and
the batch handler splits what it receives into teacher calls of at most ``max_batch_size``
states. Serve's own limit is set to ``max_batch_size`` calls, which a batch of one-state
requests reaches at the same time as the state limit.

Serve starts the wait for a batch when it takes the first request off its queue, so a
request that queued behind a running batch can wait up to ``max_wait_ms`` more after the
teacher is free. The actor backend counts the wait from the request's arrival instead.

Each replica is its own application (named ``<service>-<replica>``) so that a request id
always reaches the same replica and its cache. Serve's router balances load over the
replicas of one deployment and would send a retry elsewhere. Serve runs with no HTTP
proxy; callers use ``DeploymentHandle``s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import ray
from ray import serve

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
from policies.service.replica import QueuedRequest, ReplicaCore
from policies.teacher import LabelRequest, TeacherSpec

logger = logging.getLogger(__name__)

SERVE_CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
"""Name of Ray Serve's controller actor (``ray.serve._private.constants``, ray 2.60)."""

STATUS_POLL_S = 0.1
"""Seconds between checks of the applications' status while they start or stop."""

SERVE_ERRORS = (ray.exceptions.RayActorError, serve.exceptions.RayServeException)
"""Errors of Serve itself, reported to callers as ``LabelServiceError``."""


class ServeLabelReplica:
    """One teacher replica as a Serve deployment; ``__call__`` takes one request."""

    def __init__(self, spec: TeacherSpec, config: ServiceConfig, replica: int) -> None:
        self._core = ReplicaCore(spec, config=config, replica=replica, enqueue=self._enqueue)
        self._label_batch.set_max_batch_size(config.max_batch_size)
        self._label_batch.set_batch_wait_timeout_s(config.max_wait_s)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __call__(self, request_id: str, request: LabelRequest) -> tuple[Any, float]:
        """Return the response to one request and the seconds this call spent in the replica."""
        start = time.perf_counter()
        (response,) = await self._core.label([request_id], [request])
        return response, time.perf_counter() - start

    def _enqueue(self, queued: QueuedRequest) -> None:
        # The request's future is resolved by run_batch, so the call only needs to be queued.
        task = asyncio.get_running_loop().create_task(self._label_batch(queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _label_batch(self, batch: list[QueuedRequest]) -> list[None]:
        # The limits above are replaced in __init__ from the service config.
        try:
            await self._core.run_batch(batch, dequeued_at=time.perf_counter())
        except Exception as exc:
            logger.exception("label batch of %d requests failed outside the teacher", len(batch))
            self._core.fail_batch(batch, LabelServiceError(f"the label service failed on a batch: {exc!r}"))
        return [None] * len(batch)

    async def describe(self) -> dict[str, Any]:
        """Return the teacher's identity and cost."""
        return self._core.describe()

    async def report(self) -> ReplicaReport:
        """Return this replica's metrics for the window so far."""
        return self._core.report()

    async def reset_metrics(self) -> None:
        """Start a new metrics window."""
        self._core.recorder.reset()


class ServeLabelHandle(LabelServiceHandle):
    """Picklable client of Serve replicas: one ``DeploymentHandle`` call per request."""

    def __init__(self, handles: list[Any]) -> None:
        self._handles = tuple(handles)

    @property
    def num_replicas(self) -> int:
        return len(self._handles)

    def _send(self, groups: dict[int, tuple[list[int], list[str], list[LabelRequest]]], size: int) -> PendingLabels:
        responses = []
        positions = []
        try:
            for replica, (indices, request_ids, requests) in groups.items():
                for index, request_id, request in zip(indices, request_ids, requests):
                    responses.append(self._handles[replica].remote(request_id, request))
                    positions.append([index])
        except SERVE_ERRORS as exc:
            raise LabelServiceError(REPLICA_UNAVAILABLE) from exc
        return _ServePendingLabels(responses, positions, size)


class _ServePendingLabels(PendingLabels):
    def __init__(self, responses: list[Any], positions: list[list[int]], size: int) -> None:
        super().__init__(positions, size)
        self._responses = responses

    def done(self) -> bool:
        try:
            self._get_replies(timeout_s=0.0)
        except TimeoutError:
            return False
        except LabelServiceError:
            return True
        return True

    def _get_replies(self, timeout_s: float | None) -> list[Reply]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        replies = []
        try:
            for response in self._responses:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                labels_or_error, seconds = response.result(timeout_s=remaining)
                replies.append(([labels_or_error], seconds))
        except TimeoutError:
            raise TimeoutError(
                f"label service timed out: no response to {self.num_requests} request(s) within {timeout_s} s; "
                "raise timeout_s, or retry with the same request ids"
            ) from None
        except SERVE_ERRORS as exc:
            raise LabelServiceError(REPLICA_UNAVAILABLE) from exc
        return replies

    async def _await_replies(self) -> list[Reply]:
        try:
            results = await asyncio.gather(*self._responses)
        except SERVE_ERRORS as exc:
            raise LabelServiceError(REPLICA_UNAVAILABLE) from exc
        return [([labels_or_error], seconds) for labels_or_error, seconds in results]


class ServeReplicaGroup(ReplicaGroup):
    """``num_replicas`` one-replica Serve applications, deployed together."""

    def __init__(self, spec: TeacherSpec, config: ServiceConfig, *, start_timeout_s: float) -> None:
        if not _serve_is_running():
            serve.start(proxy_location="Disabled")
        name = f"label-{uuid.uuid4().hex[:8]}"
        self._app_names = [f"{name}-{replica}" for replica in range(config.num_replicas)]

        deployment = serve.deployment(ServeLabelReplica).options(
            num_replicas=1,
            max_ongoing_requests=MAX_CONCURRENT_CALLS,
            ray_actor_options={"num_cpus": config.num_cpus_per_replica},
            # Deleting a replica waits for its ongoing calls, checking every
            # graceful_shutdown_wait_loop_s; with Serve 2.60's default of 2 s every delete took 2 s.
            graceful_shutdown_wait_loop_s=0.1,
            graceful_shutdown_timeout_s=10.0,
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        targets = [
            serve.RunTarget(deployment.bind(spec, config, replica), name=app_name, route_prefix=None)
            for replica, app_name in enumerate(self._app_names)
        ]
        handles = serve.run_many(targets, wait_for_applications_running=False)
        try:
            self._wait_until_running(start_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        self.handle = ServeLabelHandle(handles)
        self.teacher_info = handles[0].describe.remote().result()

    def _wait_until_running(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = serve.status().applications
            states = {name: statuses[name] for name in self._app_names if name in statuses}
            failed = [name for name, state in states.items() if state.status == "DEPLOY_FAILED"]
            if failed:
                raise LabelServiceError(
                    f"label replica application {failed[0]} failed to start: {states[failed[0]].message}"
                )
            if len(states) == len(self._app_names) and all(state.status == "RUNNING" for state in states.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self._app_names)} Serve label replicas did not start within {timeout_s} s; "
                    f"the cluster has {ray.cluster_resources().get('CPU', 0)} CPUs. Lower num_cpus_per_replica "
                    "or num_replicas, or raise start_timeout_s"
                )
            time.sleep(STATUS_POLL_S)

    def reports(self) -> list[ReplicaReport]:
        return [response.result() for response in [handle.report.remote() for handle in self.handle._handles]]

    def reset_metrics(self) -> None:
        for response in [handle.reset_metrics.remote() for handle in self.handle._handles]:
            response.result()

    def shutdown(self) -> None:
        """Delete this service's applications and wait until they are gone. Serve keeps running."""
        # Stopping Serve here would strand other processes that cached a client of its
        # controller: their handles to a later Serve instance hang. So the entry point
        # that owns ray.init() also owns ray.serve.shutdown().
        for app_name in self._app_names:
            serve.delete(app_name, _blocking=False)
        self._wait_until_deleted()
        self._app_names = []

    def _wait_until_deleted(self) -> None:
        while any(name in serve.status().applications for name in self._app_names):
            time.sleep(STATUS_POLL_S)


def _serve_is_running() -> bool:
    return any(actor["name"] == SERVE_CONTROLLER_NAME for actor in ray.util.list_named_actors(all_namespaces=True))
