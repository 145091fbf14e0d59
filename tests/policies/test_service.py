"""Tests of the batched label service on both backends, with real Ray and Ray Serve."""

from __future__ import annotations

import asyncio
import pickle
import threading

import numpy as np
import pytest

from policies import LabelError, LabelInputError, LabelRequest, Labels
from policies.service import (
    LabelService,
    LabelServiceError,
    ServiceConfig,
    new_request_id,
)
from policies.service.config import replica_for
from policies.service.measure import LoadClients, format_measurements, measure_service
from policies.testing import CALL_INDEX, FailingTeacherSpec, FixedTeacherSpec

SLOW_TEACHER = FixedTeacherSpec(num_actions=4, observation_shape=(3,), probs=(0.1, 0.2, 0.3, 0.4), delay_ms=20.0)
"""Sleeps 20 ms per teacher call, so concurrent requests pile up and get batched."""

REPLICA_CPUS = 0.25
"""CPUs each test replica reserves, so every service and client fits in the 2-CPU test cluster."""

# Importing Ray Serve 2.60 raises pydantic deprecation warnings from Serve's own config classes.
pytestmark = pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray\.serve\..*")


def make_request(num_states: int, *, value: float = 0.0, mask: np.ndarray | None = None) -> LabelRequest:
    return LabelRequest(np.full((num_states, 3), value, np.float32), action_mask=mask)  # (B, 3)


def label_concurrently(service: LabelService, requests: list[LabelRequest]) -> list[Labels]:
    """Label each request from its own thread, all started together."""
    results: list[Labels | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def send(index: int) -> None:
        barrier.wait()
        (results[index],) = service.handle.label([requests[index]], timeout_s=60)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture(scope="module")
def serve_cleanup(ray_session):
    """Shut Ray Serve down after this module's Serve services are gone."""
    yield
    from ray import serve

    serve.shutdown()


@pytest.fixture(scope="module", params=["actor", "serve"])
def backend(request, serve_cleanup) -> str:
    return request.param


@pytest.fixture(scope="module")
def slow_service(backend, ray_session):
    service = LabelService.start(
        SLOW_TEACHER, backend=backend, max_batch_size=64, max_wait_ms=5.0, num_cpus_per_replica=REPLICA_CPUS
    )
    yield service
    service.shutdown()


@pytest.fixture(scope="module")
def failing_service(backend, ray_session):
    service = LabelService.start(
        FailingTeacherSpec(error="nan"), backend=backend, max_wait_ms=20.0, num_cpus_per_replica=REPLICA_CPUS
    )
    yield service
    service.shutdown()


@pytest.fixture(scope="module")
def load_clients(ray_session):
    clients = LoadClients(3)
    yield clients
    clients.close()


# Labels and batching.


def test_labels_follow_teacher(slow_service):
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    (labels,) = slow_service.label([make_request(2, mask=mask)], timeout_s=60)

    np.testing.assert_allclose(labels.probs[0], [1 / 3, 2 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(labels.probs[1], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    assert labels.teacher_id == "testing/fixed"
    assert labels.teacher_version == "1"
    assert labels.aux[CALL_INDEX].shape == (2,)


def test_concurrent_threads_are_batched(slow_service):
    slow_service.reset_metrics()
    labels = label_concurrently(slow_service, [make_request(1, value=i) for i in range(8)])

    metrics = slow_service.metrics()
    assert metrics.requests == 8
    assert metrics.labels == 8
    assert metrics.batches < 8
    assert metrics.mean_requests_per_batch > 1
    assert max(metrics.batch_size_histogram) > 1
    call_indices = [int(label.aux[CALL_INDEX][0]) for label in labels]
    assert len(set(call_indices)) < len(call_indices)


def test_actor_clients_are_batched(backend, slow_service, load_clients):
    result = measure_service(
        slow_service, num_clients=3, request_size=2, duration_s=0.5, warmup_s=0.1, clients=load_clients
    )

    assert result.labels_per_s > 0
    assert result.calls_per_s > 0
    if backend == "actor":
        # Serve forms its next batch while the current one runs, so clients that drift
        # apart in a closed loop can each get a batch of their own there.
        assert result.mean_requests_per_batch > 1
    assert result.metrics.labels == 2 * sum(replica.batched_requests for replica in result.metrics.replicas)
    assert result.latency_ms_median is not None
    assert result.transport_ms_median is not None
    assert "testing/fixed" in format_measurements([result])


def test_lone_request_waits_for_max_wait(backend, ray_session):
    service = LabelService.start(
        FixedTeacherSpec(), backend=backend, max_batch_size=4, max_wait_ms=300.0, num_cpus_per_replica=REPLICA_CPUS
    )
    try:
        pending = service.submit([make_request(1)])
        (labels,) = pending.result(timeout_s=60)
        metrics = service.metrics()
    finally:
        service.shutdown()

    assert labels.size == 1
    assert pending.latency_s >= 0.27
    assert metrics.queue_wait_ms_max >= 270


def test_full_batch_skips_max_wait(ray_session):
    # Serve counts its batch limit in calls, so only the actor backend starts a batch early on states.
    service = LabelService.start(
        FixedTeacherSpec(), backend="actor", max_batch_size=4, max_wait_ms=5000.0, num_cpus_per_replica=REPLICA_CPUS
    )
    try:
        (labels,) = service.label([make_request(4)], timeout_s=60)
        metrics = service.metrics()
    finally:
        service.shutdown()

    assert labels.size == 4
    assert metrics.queue_wait_ms_max < 2500


def test_large_request_is_labelled_alone(slow_service):
    slow_service.reset_metrics()
    (labels,) = slow_service.label([make_request(100)], timeout_s=60)

    metrics = slow_service.metrics()
    assert labels.size == 100
    assert metrics.batches == 1
    assert metrics.batch_size_histogram == {128: 1}


# Idempotent retries.


def test_retry_returns_cached_labels(slow_service):
    slow_service.reset_metrics()
    request_id = new_request_id()
    (first,) = slow_service.label([make_request(3)], request_ids=[request_id], timeout_s=60)
    (retry,) = slow_service.label([make_request(3)], request_ids=[request_id], timeout_s=60)

    np.testing.assert_array_equal(retry.probs, first.probs)
    np.testing.assert_array_equal(retry.aux[CALL_INDEX], first.aux[CALL_INDEX])
    metrics = slow_service.metrics()
    assert metrics.requests == 1
    assert metrics.duplicates == 1
    assert metrics.labels == 3


def test_concurrent_duplicates_labelled_once(slow_service):
    slow_service.reset_metrics()
    request_id = new_request_id()
    pending = [slow_service.submit([make_request(2)], request_ids=[request_id]) for _ in range(4)]
    labels = [p.result(timeout_s=60)[0] for p in pending]

    assert len({float(label.aux[CALL_INDEX][0]) for label in labels}) == 1
    metrics = slow_service.metrics()
    assert metrics.requests == 1
    assert metrics.duplicates == 3
    assert metrics.labels == 2


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (make_request(2, value=5.0), "already used for a request with different observations"),
        (make_request(3), "already used for a request with a different shape"),
    ],
)
def test_reused_id_with_other_data_rejected(slow_service, second, match):
    request_id = new_request_id()
    slow_service.label([make_request(2)], request_ids=[request_id], timeout_s=60)

    with pytest.raises(LabelInputError, match=match) as caught:
        slow_service.label([second], request_ids=[request_id], timeout_s=60)

    assert caught.value.request_id == request_id


def test_two_replicas_route_by_id(ray_session):
    service = LabelService.start(SLOW_TEACHER, num_replicas=2, max_wait_ms=5.0, num_cpus_per_replica=REPLICA_CPUS)
    try:
        request_ids = [f"route-{index}" for index in range(12)]
        requests = [make_request(1, value=index) for index in range(12)]
        first = service.label(requests, request_ids=request_ids, timeout_s=60)
        retry = service.label(requests, request_ids=request_ids, timeout_s=60)
        metrics = service.metrics()
    finally:
        service.shutdown()

    expected = [sum(replica_for(request_id, 2) == replica for request_id in request_ids) for replica in (0, 1)]
    assert [replica.requests for replica in metrics.replicas] == expected
    assert [replica.duplicates for replica in metrics.replicas] == expected
    assert metrics.labels == 12
    for before, after in zip(first, retry):
        np.testing.assert_array_equal(after.aux[CALL_INDEX], before.aux[CALL_INDEX])


def test_cache_evicts_least_recent(ray_session):
    service = LabelService.start(FixedTeacherSpec(), cache_size=2, max_wait_ms=0.0, num_cpus_per_replica=REPLICA_CPUS)
    try:
        for request_id in ("a", "b", "c"):
            service.label([make_request(1)], request_ids=[request_id], timeout_s=60)
        service.label([make_request(1)], request_ids=["c"], timeout_s=60)
        service.label([make_request(1)], request_ids=["a"], timeout_s=60)
        metrics = service.metrics()
    finally:
        service.shutdown()

    assert metrics.duplicates == 1
    assert metrics.requests == 4
    assert metrics.labels == 4


# Errors.


def test_label_error_carries_request_id(failing_service):
    request_id = new_request_id()
    match = rf"request '{request_id}': testing/failing: probabilities of row 0 contain NaN"
    with pytest.raises(LabelError, match=match) as caught:
        failing_service.label([make_request(1, value=-1.0)], request_ids=[request_id], timeout_s=60)

    assert caught.value.request_id == request_id


def test_other_teacher_error_keeps_type(ray_session):
    service = LabelService.start(FailingTeacherSpec(error="runtime"), num_cpus_per_replica=REPLICA_CPUS)
    try:
        with pytest.raises(RuntimeError, match=r"request 'bad-id': testing/failing failed on purpose") as caught:
            service.label([make_request(1, value=-1.0)], request_ids=["bad-id"], timeout_s=60)
    finally:
        service.shutdown()

    assert caught.value.request_id == "bad-id"


def test_failure_spares_batched_requests(failing_service):
    failing_service.reset_metrics()
    request_ids = [new_request_id() for _ in range(3)]
    requests = [make_request(1), make_request(1, value=-1.0), make_request(1)]

    with pytest.raises(LabelError, match=f"request '{request_ids[1]}'"):
        failing_service.label(requests, request_ids=request_ids, timeout_s=60)
    good = failing_service.label(
        [requests[0], requests[2]], request_ids=[request_ids[0], request_ids[2]], timeout_s=60
    )

    assert [labels.size for labels in good] == [1, 1]
    metrics = failing_service.metrics()
    assert metrics.errors == 1
    assert metrics.requests == 3
    assert metrics.duplicates == 2


def test_failed_request_is_retried(failing_service):
    failing_service.reset_metrics()
    request_id = new_request_id()
    for _ in range(2):
        with pytest.raises(LabelError, match="contain NaN"):
            failing_service.label([make_request(1, value=-1.0)], request_ids=[request_id], timeout_s=60)

    metrics = failing_service.metrics()
    assert metrics.errors == 2
    assert metrics.duplicates == 0


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (LabelRequest(np.zeros((2, 3), np.float64)), "obs must be float32"),
        (LabelRequest(np.zeros((2, 5), np.float32)), r"obs must have shape \(B, 3\)"),
        (LabelRequest(np.zeros((2, 3), np.float32), action_mask=np.ones((2, 2), bool)), "action_mask must be"),
        (LabelRequest(np.zeros((1, 3), np.float32), action_mask=np.zeros((1, 4), bool)), "allows no action"),
    ],
)
def test_invalid_request_rejected_before_queuing(slow_service, request_, match):
    slow_service.reset_metrics()
    with pytest.raises(LabelInputError, match=match) as caught:
        slow_service.label([request_], request_ids=["invalid-id"], timeout_s=60)

    assert "request 'invalid-id'" in str(caught.value)
    assert caught.value.request_id == "invalid-id"
    metrics = slow_service.metrics()
    assert metrics.rejected == 1
    assert metrics.requests == 0
    assert metrics.batches == 0


def test_privileged_request_needs_state(ray_session):
    service = LabelService.start(FixedTeacherSpec(requires_state=True), num_cpus_per_replica=REPLICA_CPUS)
    try:
        with pytest.raises(LabelInputError, match="needs rows and state"):
            service.label([make_request(1)], timeout_s=60)
        (labels,) = service.label(
            [LabelRequest(np.zeros((1, 3), np.float32), rows=np.array([0]), state={"pos": np.zeros((1, 2))})],
            timeout_s=60,
        )
    finally:
        service.shutdown()

    assert labels.size == 1


@pytest.mark.parametrize(
    ("requests", "request_ids", "error", "match"),
    [
        (make_request(1), None, TypeError, "wrap a single request in a list"),
        ([np.zeros((1, 3), np.float32)], None, TypeError, r"requests\[0\] must be a LabelRequest, got ndarray"),
        ([make_request(1)], "abc", TypeError, "got a single string"),
        ([make_request(1)], ["a", "b"], ValueError, "got 2 request ids for 1 requests"),
        ([make_request(1)], [7], TypeError, r"request_ids\[0\] must be a str, got int"),
        ([make_request(1)], [""], ValueError, r"request_ids\[0\] is empty"),
        ([make_request(1), make_request(1)], ["x", "x"], ValueError, "request id 'x' appears more than once"),
    ],
)
def test_call_arguments_checked(slow_service, requests, request_ids, error, match):
    with pytest.raises(error, match=match):
        slow_service.handle.label(requests, request_ids=request_ids)


def test_empty_call_returns_nothing(slow_service):
    assert slow_service.label([]) == []


# Metrics.


def test_metrics_match_workload(slow_service):
    slow_service.reset_metrics()
    sizes = [1, 2, 3, 4, 5]
    label_concurrently(slow_service, [make_request(size) for size in sizes])

    metrics = slow_service.metrics()
    assert metrics.requests == 5
    assert metrics.labels == 15
    assert metrics.duplicates == 0
    assert metrics.errors == 0
    assert sum(metrics.batch_size_histogram.values()) == metrics.batches
    assert metrics.mean_batch_size == pytest.approx(15 / metrics.batches)
    assert metrics.mean_requests_per_batch == pytest.approx(5 / metrics.batches)
    assert metrics.queue_depth == 0
    assert metrics.max_queue_depth >= 1
    assert 0 < metrics.utilisation <= 1
    assert metrics.labels_per_s > 0
    assert metrics.overhead_ms_median >= 0
    assert metrics.overhead_ms_p99 >= metrics.overhead_ms_median
    assert len(metrics.replicas) == 1
    assert metrics.replicas[0].teacher_seconds >= 0.02 * metrics.batches


def test_reset_starts_empty_window(slow_service):
    slow_service.label([make_request(1)], timeout_s=60)
    slow_service.reset_metrics()

    metrics = slow_service.metrics()
    assert metrics.requests == 0
    assert metrics.batches == 0
    assert metrics.batch_size_histogram == {}
    assert metrics.overhead_ms_median is None


# Handles and shutdown.


def test_handle_pickles(slow_service):
    handle = pickle.loads(pickle.dumps(slow_service.handle))

    (labels,) = handle.label([make_request(2)], timeout_s=60)
    assert labels.size == 2


def test_pending_labels_awaitable(slow_service):
    async def label_async() -> list[Labels]:
        return await slow_service.submit([make_request(1), make_request(2)])

    labels = asyncio.run(label_async())
    assert [label.size for label in labels] == [1, 2]


def test_shutdown_fails_later_calls(backend, ray_session):
    service = LabelService.start(FixedTeacherSpec(), backend=backend, num_cpus_per_replica=REPLICA_CPUS)
    handle = service.handle
    service.label([make_request(1)], timeout_s=60)
    service.shutdown()
    service.shutdown()

    assert not service.running
    with pytest.raises(LabelServiceError, match="this label service is shut down"):
        service.label([make_request(1)])
    with pytest.raises(LabelServiceError, match="shut down"):
        service.metrics()
    with pytest.raises(LabelServiceError, match="a label service replica is not running"):
        handle.label([make_request(1)], timeout_s=10)


# Settings.


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"backend": "http"}, ValueError, "unknown label service backend 'http'; valid backends: actor, serve"),
        ({"num_replicas": 0}, ValueError, "num_replicas must be >= 1, got 0"),
        ({"max_batch_size": 1.5}, TypeError, "max_batch_size must be an int, got 1.5"),
        ({"cache_size": -1}, ValueError, "cache_size must be >= 0, got -1"),
        ({"max_wait_ms": -1.0}, ValueError, "max_wait_ms must be >= 0, got -1.0"),
        ({"max_wait_ms": float("nan")}, ValueError, "max_wait_ms must be >= 0, got nan"),
        ({"num_cpus_per_replica": 0}, ValueError, "num_cpus_per_replica must be > 0, got 0"),
        ({"num_cpus_per_replica": "1"}, TypeError, "num_cpus_per_replica must be a number, got '1'"),
    ],
)
def test_config_rejects_invalid_settings(options, error, match):
    with pytest.raises(error, match=match):
        ServiceConfig(**options)


def test_start_rejects_non_spec(ray_session):
    with pytest.raises(TypeError, match="spec must be a TeacherSpec with a build\\(\\) method, got str"):
        LabelService.start("planner")


def test_fixed_spec_rejects_bad_probs():
    with pytest.raises(ValueError, match="probs must be 4 non-negative numbers summing to 1"):
        FixedTeacherSpec(probs=(0.5, 0.5, 0.5, 0.5))
