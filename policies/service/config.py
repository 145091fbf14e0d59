"""Settings of the label service and its own error type."""

from __future__ import annotations

import dataclasses
import math
import uuid
import zlib

from policies.teacher import TeacherError

BACKENDS = ("actor", "serve")
"""Label service implementations: async Ray actors, or Ray Serve deployments."""

MAX_CONCURRENT_CALLS = 10_000
"""Calls one replica accepts at once; the rest wait in Ray. Batching needs many in flight."""


REPLICA_UNAVAILABLE = (
    "a label service replica is not running (shut down or died); "
    "restart the service and retry with the same request ids"
)
"""Message of the ``LabelServiceError`` a call gets when its replica is gone."""


class LabelServiceError(TeacherError):
    """The label service failed to respond: it is shut down, a replica died, or it failed inside."""


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Settings of a label service: backend, replicas, batching and cache."""

    backend: str = "actor"
    """``"actor"`` (async Ray actors with their own batcher) or ``"serve"`` (Ray Serve, ``@serve.batch``)."""
    num_replicas: int = 1
    """Teacher replicas. A request goes to the replica chosen by a hash of its id."""
    max_batch_size: int = 1024
    """Maximum states in one teacher call. A single larger request is labelled alone, in one call."""
    max_wait_ms: float = 0.0
    """Maximum time the oldest queued request waits for a batch to fill, in milliseconds.

    Requests that arrive while the teacher is busy are batched together whatever this is.
    The wait only holds back an idle teacher, so 0 gives the highest utilisation with
    closed-loop clients. Raise it to make fewer, larger teacher calls (a teacher billed
    per call) at the price of latency.
    """
    num_cpus_per_replica: float = 1.0
    """CPUs each replica reserves from Ray. Fractions pack several replicas on one CPU."""
    cache_size: int = 4096
    """Completed requests each replica remembers by id, least recently used first out; 0 keeps none.

    A retry of an evicted request is labelled and counted again. Memory per entry is the
    request's labels, B x A float32 plus auxiliary targets.
    """

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown label service backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}")
        _check_int("num_replicas", self.num_replicas, minimum=1)
        _check_int("max_batch_size", self.max_batch_size, minimum=1)
        _check_int("cache_size", self.cache_size, minimum=0)
        _check_number("max_wait_ms", self.max_wait_ms, allow_zero=True)
        _check_number("num_cpus_per_replica", self.num_cpus_per_replica, allow_zero=False)

    @property
    def max_wait_s(self) -> float:
        """``max_wait_ms`` in seconds."""
        return self.max_wait_ms / 1000.0


def new_request_id() -> str:
    """Return a fresh random request id (32 hex digits)."""
    return uuid.uuid4().hex


def replica_for(request_id: str, num_replicas: int) -> int:
    """Return the replica that serves ``request_id``.

    Routing by a stable hash of the id sends every retry to the replica whose cache contains
    the first labels. Python's ``hash`` of a string differs between processes, so CRC-32 is used.
    """
    return zlib.crc32(request_id.encode()) % num_replicas


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
