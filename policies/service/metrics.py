"""Metrics of the label service: what each replica records, and the snapshot callers read.

Each replica keeps a ``MetricsRecorder``. ``LabelService.metrics()`` collects one
``ReplicaMetrics`` and the raw timing samples from every replica and merges them into a
``ServiceMetrics``. Every rate and utilisation is over the window since the replica
started or since the last ``reset_metrics``.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping, Sequence

import numpy as np

MAX_TIMING_SAMPLES = 10_000
"""Most recent batches (overhead) and requests (queue wait) whose timings a replica keeps."""


def batch_size_bucket(num_states: int) -> int:
    """Return the power of two that bounds ``num_states`` from above (1 for 0 and 1)."""
    return 1 << (max(num_states, 1) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class ReplicaMetrics:
    """Counters and timings of one teacher replica."""

    replica: int
    """Index of the replica, 0 to ``num_replicas - 1``."""
    wall_seconds: float
    """Length of the metrics window."""
    requests: int
    """Distinct requests accepted; a repeated id is counted under ``duplicates`` instead."""
    duplicates: int
    """Requests served from the cache or by waiting for the same id already in flight."""
    rejected: int
    """Requests rejected before queuing: invalid for the teacher, or an id reused for other data."""
    errors: int
    """Requests whose labelling raised an error."""
    labels: int
    """States labelled by the teacher."""
    batches: int
    """Teacher calls (``label_many``) made."""
    batched_requests: int
    """Requests in those teacher calls."""
    batch_size_histogram: Mapping[int, int]
    """Teacher calls by their number of states, keyed by the power of two that bounds it."""
    teacher_seconds: float
    """Time spent inside ``teacher.label_many``."""
    utilisation: float
    """``teacher_seconds / wall_seconds``: the fraction of the window the teacher was busy."""
    queue_depth: int
    """Requests queued now, waiting for a batch."""
    max_queue_depth: int
    """Most requests queued at once during the window."""
    overhead_ms_median: float | None
    """Median per-batch service overhead (see ``ServiceMetrics.overhead_ms_median``)."""
    overhead_ms_p99: float | None
    """99th percentile of the per-batch service overhead."""


@dataclasses.dataclass(frozen=True)
class ServiceMetrics:
    """A snapshot of the whole label service, merged over its replicas."""

    backend: str
    """``"actor"`` or ``"serve"``."""
    wall_seconds: float
    """Length of the metrics window (the longest over replicas)."""
    requests: int
    """Distinct requests accepted; repeated ids are counted under ``duplicates`` only."""
    duplicates: int
    """Requests served from a replica's cache or by waiting for the same id in flight."""
    rejected: int
    """Requests rejected before queuing."""
    errors: int
    """Requests whose labelling raised an error."""
    labels: int
    """States labelled by the teachers."""
    batches: int
    """Teacher calls made."""
    batch_size_histogram: Mapping[int, int]
    """Teacher calls by number of states, keyed by the power of two that bounds it
    (``{1: calls of 0 or 1 state, 2: calls of 2, 4: calls of 3-4, 8: calls of 5-8, ...}``)."""
    mean_batch_size: float
    """Mean states per teacher call."""
    mean_requests_per_batch: float
    """Mean requests per teacher call; above 1 means requests were batched together."""
    labels_per_s: float
    """States labelled per second of the window, summed over replicas."""
    queue_depth: int
    """Requests queued now, summed over replicas."""
    max_queue_depth: int
    """The largest queue any single replica had during the window."""
    utilisation: float
    """Mean over replicas of the fraction of the window their teacher was busy."""
    overhead_ms_median: float | None
    """Median per-batch service overhead in ms, ``None`` before the first batch.

    The overhead of a batch is the time from taking it off the queue until every
    request in it has its response, minus the time spent in ``teacher.label_many``: the
    thread hand-off, splitting results, caching and waking the callers. Sending the
    response back over Ray is not included; ``measure_service`` reports that separately.
    """
    overhead_ms_p99: float | None
    """99th percentile of the per-batch service overhead in ms."""
    queue_wait_ms_median: float | None
    """Median time a request waited in the queue before its batch was taken, in ms."""
    queue_wait_ms_max: float | None
    """Maximum such wait in ms."""
    replicas: tuple[ReplicaMetrics, ...]
    """Per-replica figures, in replica order."""


@dataclasses.dataclass(frozen=True)
class ReplicaReport:
    """A replica's figures and raw timing samples, as ``LabelService.metrics()`` collects them."""

    metrics: ReplicaMetrics
    overhead_ms: np.ndarray
    """(S,) float64 per-batch overheads of the window, the most recent ``MAX_TIMING_SAMPLES``."""
    queue_wait_ms: np.ndarray
    """(R,) float64 per-request queue waits of the window, the most recent ``MAX_TIMING_SAMPLES``."""


class MetricsRecorder:
    """Counters and timing samples of one replica. Called from the replica's event loop only."""

    def __init__(self, replica: int) -> None:
        self.replica = replica
        self.queue_depth = 0
        self.reset()

    def reset(self) -> None:
        """Start a new window. The current queue depth carries over."""
        self.window_start = time.perf_counter()
        self.requests = 0
        self.duplicates = 0
        self.rejected = 0
        self.errors = 0
        self.labels = 0
        self.batches = 0
        self.batched_requests = 0
        self.teacher_seconds = 0.0
        self.histogram: collections.Counter[int] = collections.Counter()
        self.max_queue_depth = self.queue_depth
        self.overhead_ms: collections.deque[float] = collections.deque(maxlen=MAX_TIMING_SAMPLES)
        self.queue_wait_ms: collections.deque[float] = collections.deque(maxlen=MAX_TIMING_SAMPLES)

    def record_enqueued(self) -> None:
        """Count one accepted request entering the queue."""
        self.requests += 1
        self.queue_depth += 1
        self.max_queue_depth = max(self.max_queue_depth, self.queue_depth)

    def record_dequeued(self, queue_waits_s: Sequence[float]) -> None:
        """Record requests leaving the queue for a batch, with how long each waited."""
        self.queue_depth -= len(queue_waits_s)
        self.queue_wait_ms.extend(wait * 1e3 for wait in queue_waits_s)

    def record_batch(
        self, *, num_requests: int, num_states: int, teacher_seconds: float, overhead_seconds: float
    ) -> None:
        """Record one teacher call."""
        self.batches += 1
        self.batched_requests += num_requests
        self.labels += num_states
        self.teacher_seconds += teacher_seconds
        self.histogram[batch_size_bucket(num_states)] += 1
        self.overhead_ms.append(overhead_seconds * 1e3)

    def report(self) -> ReplicaReport:
        """Return the replica's figures for the window so far."""
        wall_seconds = time.perf_counter() - self.window_start
        overhead_ms = np.fromiter(self.overhead_ms, dtype=np.float64)  # (S,)
        queue_wait_ms = np.fromiter(self.queue_wait_ms, dtype=np.float64)  # (R,)
        metrics = ReplicaMetrics(
            replica=self.replica,
            wall_seconds=wall_seconds,
            requests=self.requests,
            duplicates=self.duplicates,
            rejected=self.rejected,
            errors=self.errors,
            labels=self.labels,
            batches=self.batches,
            batched_requests=self.batched_requests,
            batch_size_histogram=dict(sorted(self.histogram.items())),
            teacher_seconds=self.teacher_seconds,
            utilisation=self.teacher_seconds / wall_seconds if wall_seconds > 0 else 0.0,
            queue_depth=self.queue_depth,
            max_queue_depth=self.max_queue_depth,
            overhead_ms_median=_percentile(overhead_ms, 50),
            overhead_ms_p99=_percentile(overhead_ms, 99),
        )
        return ReplicaReport(metrics, overhead_ms, queue_wait_ms)


def merge_reports(reports: Sequence[ReplicaReport], *, backend: str) -> ServiceMetrics:
    """Merge per-replica reports into one service snapshot; percentiles pool all samples."""
    replicas = tuple(report.metrics for report in reports)
    histogram: collections.Counter[int] = collections.Counter()
    for replica in replicas:
        histogram.update(replica.batch_size_histogram)
    overhead_ms = np.concatenate([np.zeros(0)] + [report.overhead_ms for report in reports])
    queue_wait_ms = np.concatenate([np.zeros(0)] + [report.queue_wait_ms for report in reports])

    batches = sum(replica.batches for replica in replicas)
    labels = sum(replica.labels for replica in replicas)
    batched_requests = sum(replica.batched_requests for replica in replicas)
    return ServiceMetrics(
        backend=backend,
        wall_seconds=max((replica.wall_seconds for replica in replicas), default=0.0),
        requests=sum(replica.requests for replica in replicas),
        duplicates=sum(replica.duplicates for replica in replicas),
        rejected=sum(replica.rejected for replica in replicas),
        errors=sum(replica.errors for replica in replicas),
        labels=labels,
        batches=batches,
        batch_size_histogram=dict(sorted(histogram.items())),
        mean_batch_size=labels / batches if batches else 0.0,
        mean_requests_per_batch=batched_requests / batches if batches else 0.0,
        labels_per_s=sum(
            replica.labels / replica.wall_seconds for replica in replicas if replica.wall_seconds > 0
        ),
        queue_depth=sum(replica.queue_depth for replica in replicas),
        max_queue_depth=max((replica.max_queue_depth for replica in replicas), default=0),
        utilisation=float(np.mean([replica.utilisation for replica in replicas])) if replicas else 0.0,
        overhead_ms_median=_percentile(overhead_ms, 50),
        overhead_ms_p99=_percentile(overhead_ms, 99),
        queue_wait_ms_median=_percentile(queue_wait_ms, 50),
        queue_wait_ms_max=float(queue_wait_ms.max()) if queue_wait_ms.size else None,
        replicas=replicas,
    )


def _percentile(samples: np.ndarray, q: float) -> float | None:
    return float(np.percentile(samples, q)) if samples.size else None
