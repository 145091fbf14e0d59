"""The part of a teacher replica both backends share: idempotent admission and batch labelling.

A ``ReplicaCore`` lives inside one Ray actor or Serve replica and runs on its event loop.
``label`` admits requests by id: a completed id is served from a bounded LRU cache, an
id still in flight waits for the first computation, and a new id is validated against the
teacher and handed to the backend's queue. The backend later calls ``run_batch`` with what
it took off the queue. The teacher runs on one worker thread, so the event loop keeps
accepting requests while it computes.

Responses are values, not raised exceptions. Each request gets its ``Labels`` or the
exception its labelling raised, re-created with the request id in its message.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import pickle
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policies.service.config import LabelServiceError, ServiceConfig
from policies.service.metrics import MetricsRecorder, ReplicaReport
from policies.teacher import LabelInputError, LabelRequest, Labels, Teacher, TeacherSpec

logger = logging.getLogger(__name__)

Response = Labels | BaseException
"""A request's labels, or the exception its labelling raised."""


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Cheap identity of a request's data, to catch an id reused for different states."""

    obs_shape: tuple[int, ...]
    obs_crc32: int

    @classmethod
    def of(cls, request: LabelRequest) -> Fingerprint:
        # CRC-32 of the observations only: about 20 us per 128 KiB on a 2-core EPYC VM.
        obs = request.obs if request.obs.flags.c_contiguous else np.ascontiguousarray(request.obs)
        return cls(tuple(obs.shape), zlib.crc32(obs))


@dataclasses.dataclass(eq=False)
class QueuedRequest:
    """A new request on its way through the queue to the teacher."""

    request_id: str
    request: LabelRequest
    fingerprint: Fingerprint
    future: asyncio.Future[Response]
    arrival: float
    """``time.perf_counter()`` when the replica admitted it."""

    @property
    def size(self) -> int:
        return self.request.size


class ReplicaCore:
    """Teacher, idempotency cache and metrics of one replica.

    Args:
        spec: built here, once.
        config: the service settings.
        replica: index of this replica.
        enqueue: the backend's queue, called with each new request.

    Raises:
        TypeError: ``spec.build()`` did not return a ``Teacher``.
    """

    def __init__(
        self,
        spec: TeacherSpec,
        *,
        config: ServiceConfig,
        replica: int,
        enqueue: Callable[[QueuedRequest], None],
    ) -> None:
        teacher = spec.build()
        if not isinstance(teacher, Teacher):
            raise TypeError(f"{type(spec).__name__}.build() must return a Teacher, got {type(teacher).__name__}")
        self.teacher = teacher
        self.config = config
        self.replica = replica
        self.recorder = MetricsRecorder(replica)
        self._enqueue = enqueue
        self._cache: collections.OrderedDict[str, tuple[Fingerprint, Labels]] = collections.OrderedDict()
        self._in_flight: dict[str, QueuedRequest] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")
        logger.info(
            "label replica %d started: teacher %s version %s, backend %s",
            replica, teacher.teacher_id, teacher.version, config.backend,
        )

    def describe(self) -> dict[str, Any]:
        """Return the teacher's identity, cost and observation shape, and this replica's index."""
        shape = self.teacher.observation_shape
        return {
            "replica": self.replica,
            **self.teacher.describe(),
            "observation_shape": None if shape is None else list(shape),
        }

    def report(self) -> ReplicaReport:
        """Return this replica's metrics for the window so far."""
        return self.recorder.report()

    async def label(self, request_ids: Sequence[str], requests: Sequence[LabelRequest]) -> list[Response]:
        """Admit requests and return their responses, in order, once all are ready."""
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Response] | Response] = [
            self._admit(request_id, request, loop) for request_id, request in zip(request_ids, requests, strict=True)
        ]
        return [await response if isinstance(response, asyncio.Future) else response for response in pending]

    def _admit(
        self, request_id: str, request: LabelRequest, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Response] | Response:
        """Return the cached labels, the future of the same id in flight, or queue the request."""
        try:
            # Requests are validated before queuing, so an invalid one never reaches a batch.
            self.teacher.validate_request(request)
            fingerprint = Fingerprint.of(request)
        except LabelInputError as exc:
            self.recorder.rejected += 1
            logger.warning("label replica %d rejected request %r: %s", self.replica, request_id, exc)
            return with_request_id(exc, request_id)

        cached = self._cache.get(request_id)
        if cached is not None:
            if cached[0] != fingerprint:
                return self._reject_reused_id(request_id, cached[0], fingerprint)
            self._cache.move_to_end(request_id)
            self.recorder.duplicates += 1
            return cached[1]
        queued = self._in_flight.get(request_id)
        if queued is not None:
            if queued.fingerprint != fingerprint:
                return self._reject_reused_id(request_id, queued.fingerprint, fingerprint)
            self.recorder.duplicates += 1
            return queued.future

        queued = QueuedRequest(request_id, request, fingerprint, loop.create_future(), time.perf_counter())
        self._in_flight[request_id] = queued
        self.recorder.record_enqueued()
        self._enqueue(queued)
        return queued.future

    def _reject_reused_id(self, request_id: str, first: Fingerprint, second: Fingerprint) -> LabelInputError:
        self.recorder.rejected += 1
        logger.warning("label replica %d rejected reused request id %r", self.replica, request_id)
        difference = "a different shape" if first.obs_shape != second.obs_shape else "different observations"
        error = LabelInputError(
            f"request {request_id!r}: this id was already used for a request with {difference} "
            f"(obs shape {first.obs_shape}, now {second.obs_shape}); "
            "give every distinct request a fresh id, for example new_request_id()"
        )
        error.request_id = request_id  # type: ignore[attr-defined]
        return error

    async def run_batch(self, batch: Sequence[QueuedRequest], *, dequeued_at: float) -> None:
        """Label requests taken off the queue at ``dequeued_at`` and resolve their futures.

        The batch is split into teacher calls of at most ``max_batch_size`` states, except
        that a request larger than that goes alone.
        """
        self.recorder.record_dequeued([dequeued_at - queued.arrival for queued in batch])
        start = dequeued_at
        for chunk in _split_by_states(batch, self.config.max_batch_size):
            loop = asyncio.get_running_loop()
            responses, teacher_seconds = await loop.run_in_executor(
                self._executor, self._label_in_thread, [queued.request for queued in chunk]
            )
            for queued, response in zip(chunk, responses, strict=True):
                self._resolve(queued, response)
            end = time.perf_counter()
            self.recorder.record_batch(
                num_requests=len(chunk),
                num_states=sum(queued.size for queued in chunk),
                teacher_seconds=teacher_seconds,
                overhead_seconds=end - start - teacher_seconds,
            )
            start = end

    def fail_batch(self, batch: Sequence[QueuedRequest], error: BaseException) -> None:
        """Resolve every request of a batch with ``error``, after a failure outside the teacher."""
        for queued in batch:
            if not queued.future.done():
                self._resolve(queued, error)

    def _label_in_thread(self, requests: list[LabelRequest]) -> tuple[list[Response], float]:
        """Run the teacher on one batch; on failure, label each request alone to isolate the bad ones."""
        start = time.perf_counter()
        try:
            responses: list[Response] = list(self.teacher.label_many(requests))
        except Exception as exc:  # noqa: BLE001 - any teacher error goes back to the requests' callers
            if len(requests) == 1:
                responses = [exc]
            else:
                responses = [self._label_one(request) for request in requests]
        return responses, time.perf_counter() - start

    def _label_one(self, request: LabelRequest) -> Response:
        try:
            return self.teacher.label(request)
        except Exception as exc:  # noqa: BLE001 - any teacher error goes back to the request's caller
            return exc

    def _resolve(self, queued: QueuedRequest, response: Response) -> None:
        self._in_flight.pop(queued.request_id, None)
        if isinstance(response, BaseException):
            self.recorder.errors += 1
            logger.warning(
                "label replica %d: request %r failed: %s: %s",
                self.replica, queued.request_id, type(response).__name__, response,
            )
            response = with_request_id(response, queued.request_id)
        elif self.config.cache_size > 0:
            self._cache[queued.request_id] = (queued.fingerprint, response)
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        queued.future.set_result(response)


def with_request_id(error: BaseException, request_id: str) -> BaseException:
    """Return ``error`` re-created with the request id in its message and as ``request_id``.

    The result keeps the error's type when that type takes one message argument and
    pickles, so callers can catch it by type. Otherwise it is a ``LabelServiceError``.
    """
    message = f"request {request_id!r}: {type(error).__name__}: {error}"
    try:
        tagged = type(error)(f"request {request_id!r}: {error}")
        tagged.request_id = request_id  # type: ignore[attr-defined]
        pickle.loads(pickle.dumps(tagged))
    except Exception:  # noqa: BLE001 - any failure to re-create or pickle falls back to LabelServiceError
        tagged = LabelServiceError(message)
        tagged.request_id = request_id  # type: ignore[attr-defined]
    return tagged


def _split_by_states(batch: Sequence[QueuedRequest], max_states: int) -> list[list[QueuedRequest]]:
    chunks: list[list[QueuedRequest]] = []
    chunk: list[QueuedRequest] = []
    states = 0
    for queued in batch:
        if chunk and states + queued.size > max_states:
            chunks.append(chunk)
            chunk, states = [], 0
        chunk.append(queued)
        states += queued.size
    if chunk:
        chunks.append(chunk)
    return chunks
