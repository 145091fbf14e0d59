"""Measure a running label service under closed-loop load from several concurrent clients.

Each client sends one request of ``request_size`` states, waits for its labels, and sends
the next, with a fresh request id every time. Clients are Ray actors by default, like
rollout workers, or threads of the calling process. After a warm-up the service's metrics
are reset, and the figures cover a window of ``duration_s`` seconds while every client
keeps sending.

Run ``python -m policies.service.measure`` to compare the backends on this machine; it owns
``ray.init``. Library callers (``shepherd bench teacher``) use ``measure_service`` with a
``LabelService`` they started.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policies.service.client import LabelService, LabelServiceHandle, PendingLabels
from policies.service.metrics import ServiceMetrics
from policies.teacher import LabelRequest, TeacherSpec

logger = logging.getLogger(__name__)

CLIENT_KINDS = ("actor", "thread")
"""Kinds of load client: Ray actors reserving no CPU, or threads of the calling process."""

MAX_CLIENT_RUN_S = 600.0
"""A client stops by itself after this many seconds, in case the driver never stops it."""


@dataclasses.dataclass(frozen=True)
class ServiceMeasurement:
    """Figures of one measurement window: one service, one client count, one request size."""

    backend: str
    teacher_id: str
    num_replicas: int
    max_batch_size: int
    max_wait_ms: float
    num_clients: int
    request_size: int
    """States per request."""
    in_flight: int
    """Requests each client kept outstanding."""
    window_s: float
    """Length of the window the figures cover."""
    labels_per_s: float
    """States labelled per second, from the service's metrics."""
    calls_per_s: float
    """Client calls completed inside the window, per second."""
    utilisation: float
    """Mean fraction of the window the replicas' teachers were busy."""
    mean_batch_size: float
    """Mean states per teacher call."""
    mean_requests_per_batch: float
    teacher_ms_per_batch: float | None
    """Mean time inside ``teacher.label_many`` per call."""
    overhead_ms_median: float | None
    """Median per-batch overhead inside the replica (see ``ServiceMetrics.overhead_ms_median``)."""
    overhead_ms_p99: float | None
    latency_ms_median: float | None
    """Median client round trip of one call: queue wait, teacher, overhead and transport."""
    latency_ms_p99: float | None
    transport_ms_median: float | None
    """Median of a call's round trip minus its time inside the replica: Ray or Serve's
    cost of carrying the call and its response."""
    transport_ms_p99: float | None
    metrics: ServiceMetrics = dataclasses.field(repr=False)
    """The service's snapshot at the end of the window."""

    def summary(self) -> dict[str, Any]:
        """Return the figures as plain data, without the metrics snapshot."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "metrics"}


def random_obs_request(size: int, *, obs_shape: tuple[int, ...], seed: int) -> LabelRequest:
    """Return a request of ``size`` states with standard normal float32 observations."""
    rng = np.random.default_rng(seed)
    return LabelRequest(rng.standard_normal((size, *obs_shape)).astype(np.float32))  # (B, *O)


Call = tuple[float, float, float]
"""One client call: ``time.monotonic()`` when sent and when its response arrived, and the seconds it spent in the replica."""


class LoadClient:
    """Sends requests in a closed loop until stopped; run as a Ray actor or in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped: set[int] = set()
        self._completed: collections.Counter[int] = collections.Counter()

    def ready(self) -> bool:
        """Return ``True``; a Ray caller waits on it until the actor runs."""
        return True

    def run(
        self,
        handle: LabelServiceHandle,
        *,
        request: LabelRequest,
        run_id: int,
        in_flight: int = 1,
        max_seconds: float = MAX_CLIENT_RUN_S,
    ) -> list[Call]:
        """Keep ``in_flight`` copies of ``request`` outstanding, with fresh ids, until ``stop(run_id)``."""
        calls = []
        outstanding: collections.deque[tuple[float, PendingLabels]] = collections.deque()
        give_up = time.monotonic() + max_seconds
        while not self._is_stopped(run_id) and time.monotonic() < give_up:
            while len(outstanding) < in_flight:
                outstanding.append((time.monotonic(), handle.submit([request])))
            sent, pending = outstanding.popleft()
            pending.result()
            calls.append((sent, time.monotonic(), pending.replica_s or 0.0))
            with self._lock:
                self._completed[run_id] += 1
        for _, pending in outstanding:
            pending.result()
        return calls

    def completed_calls(self, run_id: int) -> int:
        """Return how many calls of ``run(run_id)`` have had their response so far."""
        with self._lock:
            return self._completed[run_id]

    def stop(self, run_id: int) -> None:
        """Make ``run(run_id)`` return after its current call, even if it has not started yet."""
        # A threaded Ray actor may run `stop` before `run`, so a stop is remembered by id.
        with self._lock:
            self._stopped.add(run_id)

    def _is_stopped(self, run_id: int) -> bool:
        with self._lock:
            return run_id in self._stopped


@functools.cache
def _remote_client_class() -> Any:
    import ray

    # Three threads: one runs `run`, the others take `completed_calls` and `stop`.
    return ray.remote(num_cpus=0, max_concurrency=3)(LoadClient)


class LoadRun:
    """Clients of a ``LoadClients`` pool sending load, until ``stop()``."""

    def __init__(self, clients: list[Any], *, kind: str, run_id: int, finish: Callable[[], list[list[Call]]]) -> None:
        self._clients = clients
        self._kind = kind
        self._run_id = run_id
        self._finish = finish

    def wait_for_first_responses(self, timeout_s: float) -> None:
        """Block until every client has had one response, so start-up costs stay out of the window.

        Raises:
            TimeoutError: some client had no response within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while min(self._completed_calls()) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"a load client timed out: no response from the label service within {timeout_s} s"
                )
            time.sleep(0.01)

    def stop(self) -> list[list[Call]]:
        """Stop every client after its current call and return each client's calls."""
        if self._kind == "actor":
            import ray

            ray.get([client.stop.remote(self._run_id) for client in self._clients])
        else:
            for client in self._clients:
                client.stop(self._run_id)
        return self._finish()

    def _completed_calls(self) -> list[int]:
        if self._kind == "actor":
            import ray

            return ray.get([client.completed_calls.remote(self._run_id) for client in self._clients])
        return [client.completed_calls(self._run_id) for client in self._clients]


class LoadClients:
    """A pool of load clients, reusable across services and measurements. Call ``close()``."""

    def __init__(self, num_clients: int, *, kind: str = "actor") -> None:
        if kind not in CLIENT_KINDS:
            raise ValueError(f"unknown client kind {kind!r}; valid kinds: {', '.join(CLIENT_KINDS)}")
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        self.kind = kind
        self._runs = 0
        if kind == "actor":
            import ray

            self._clients: list[Any] = [_remote_client_class().remote() for _ in range(num_clients)]
            ray.get([client.ready.remote() for client in self._clients])
        else:
            self._clients = [LoadClient() for _ in range(num_clients)]

    def __len__(self) -> int:
        return len(self._clients)

    def start(self, handle: LabelServiceHandle, requests: Sequence[LabelRequest], *, in_flight: int = 1) -> LoadRun:
        """Start the first ``len(requests)`` clients, each sending its own request."""
        clients = self._clients[: len(requests)]
        self._runs += 1
        run_id = self._runs
        if self.kind == "actor":
            import ray

            refs = [
                client.run.remote(handle, request=request, run_id=run_id, in_flight=in_flight)
                for client, request in zip(clients, requests)
            ]
            return LoadRun(clients, kind=self.kind, run_id=run_id, finish=lambda: ray.get(refs))

        results: list[list[Call]] = [[] for _ in clients]

        def run_thread(index: int) -> None:
            results[index] = clients[index].run(handle, request=requests[index], run_id=run_id, in_flight=in_flight)

        threads = [threading.Thread(target=run_thread, args=(index,), daemon=True) for index in range(len(clients))]
        for thread in threads:
            thread.start()

        def join_threads() -> list[list[Call]]:
            for thread in threads:
                thread.join()
            return results

        return LoadRun(clients, kind=self.kind, run_id=run_id, finish=join_threads)

    def close(self) -> None:
        """Release the client actors."""
        if self.kind == "actor":
            import ray

            for client in self._clients:
                ray.kill(client)
        self._clients = []


def measure_service(
    service: LabelService,
    *,
    num_clients: int,
    request_size: int,
    in_flight: int = 1,
    duration_s: float = 2.0,
    warmup_s: float = 0.5,
    clients: LoadClients | None = None,
    make_request: Callable[[int, int], LabelRequest] | None = None,
    start_timeout_s: float = 60.0,
) -> ServiceMeasurement:
    """Load ``service`` with ``num_clients`` closed-loop clients and measure one window.

    Args:
        service: a running service; its metrics are reset after the warm-up.
        num_clients: concurrent clients.
        request_size: states per request.
        in_flight: requests each client keeps outstanding; 1 waits for every response
            before sending again, more overlaps them like an asynchronous rollout worker.
        duration_s: length of the measured window.
        warmup_s: load before the window, counted from every client's first response.
        clients: a pool of at least ``num_clients`` clients to reuse; a pool of Ray
            actors is made and released when ``None``.
        make_request: ``make_request(size, seed)`` builds each client's request, for
            teachers that need more than observations. By default the observations are
            random, of the teacher's ``observation_shape``.
        start_timeout_s: maximum wait for every client's first response.

    Raises:
        ValueError: ``clients`` is too small, or the teacher needs a ``make_request``.
        TimeoutError: a client had no response within ``start_timeout_s``.
    """
    if make_request is None:
        make_request = _default_request_maker(service)
    own_clients = clients is None
    pool = LoadClients(num_clients) if clients is None else clients
    if len(pool) < num_clients:
        raise ValueError(f"the client pool has {len(pool)} clients, fewer than num_clients={num_clients}")
    requests = [make_request(request_size, seed) for seed in range(num_clients)]

    try:
        load = pool.start(service.handle, requests, in_flight=in_flight)
        try:
            load.wait_for_first_responses(start_timeout_s)
            time.sleep(warmup_s)
            service.reset_metrics()
            window_start = time.monotonic()
            time.sleep(duration_s)
            metrics = service.metrics()
            window_end = time.monotonic()
        finally:
            calls = [call for client_calls in load.stop() for call in client_calls]
    finally:
        if own_clients:
            pool.close()
    return _summarise(
        service, metrics, calls, (window_start, window_end), num_clients=num_clients,
        request_size=request_size, in_flight=in_flight,
    )


def _default_request_maker(service: LabelService) -> Callable[[int, int], LabelRequest]:
    info = service.teacher_info
    if info.get("requires_state"):
        raise ValueError(
            f"teacher {info.get('teacher_id')} needs rows and state in its requests; pass make_request"
        )
    if info.get("observation_shape") is None:
        raise ValueError(
            f"teacher {info.get('teacher_id')} accepts any observation shape; pass make_request"
        )
    return functools.partial(_random_request, obs_shape=tuple(info["observation_shape"]))


def _random_request(size: int, seed: int, *, obs_shape: tuple[int, ...]) -> LabelRequest:
    return random_obs_request(size, obs_shape=obs_shape, seed=seed)


def _summarise(
    service: LabelService,
    metrics: ServiceMetrics,
    calls: list[Call],
    window: tuple[float, float],
    *,
    num_clients: int,
    request_size: int,
    in_flight: int,
) -> ServiceMeasurement:
    window_start, window_end = window
    inside = np.array([call for call in calls if call[0] >= window_start and call[1] <= window_end]).reshape(-1, 3)
    latency_ms = (inside[:, 1] - inside[:, 0]) * 1e3  # (C,)
    transport_ms = latency_ms - inside[:, 2] * 1e3  # (C,)
    teacher_seconds = sum(replica.teacher_seconds for replica in metrics.replicas)
    config = service.config
    return ServiceMeasurement(
        backend=config.backend,
        teacher_id=str(service.teacher_info.get("teacher_id")),
        num_replicas=config.num_replicas,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        num_clients=num_clients,
        request_size=request_size,
        in_flight=in_flight,
        window_s=metrics.wall_seconds,
        labels_per_s=metrics.labels_per_s,
        calls_per_s=len(inside) / (window_end - window_start),
        utilisation=metrics.utilisation,
        mean_batch_size=metrics.mean_batch_size,
        mean_requests_per_batch=metrics.mean_requests_per_batch,
        teacher_ms_per_batch=teacher_seconds / metrics.batches * 1e3 if metrics.batches else None,
        overhead_ms_median=metrics.overhead_ms_median,
        overhead_ms_p99=metrics.overhead_ms_p99,
        latency_ms_median=_percentile(latency_ms, 50),
        latency_ms_p99=_percentile(latency_ms, 99),
        transport_ms_median=_percentile(transport_ms, 50),
        transport_ms_p99=_percentile(transport_ms, 99),
        metrics=metrics,
    )


def _percentile(samples: np.ndarray, q: float) -> float | None:
    return float(np.percentile(samples, q)) if samples.size else None


def format_measurements(measurements: Sequence[ServiceMeasurement]) -> str:
    """Return the measurements as a fixed-width text table, one row each."""
    header = (
        f"{'backend':<7} {'teacher':<15} {'clients':>7} {'states':>6} {'fly':>3} {'wait':>4} {'labels/s':>10} {'util':>5} "
        f"{'batch':>6} {'req/b':>5} {'teach ms':>8} {'ovh med':>7} {'ovh p99':>7} "
        f"{'rtt med':>7} {'rtt p99':>7} {'trans med':>9}"
    )
    lines = [header]
    for m in measurements:
        lines.append(
            f"{m.backend:<7} {m.teacher_id:<15} {m.num_clients:>7} {m.request_size:>6} {m.in_flight:>3} {m.max_wait_ms:>4g} "
            f"{m.labels_per_s:>10,.0f} "
            f"{m.utilisation:>5.0%} {m.mean_batch_size:>6.0f} {m.mean_requests_per_batch:>5.1f} "
            f"{_ms(m.teacher_ms_per_batch):>8} {_ms(m.overhead_ms_median):>7} {_ms(m.overhead_ms_p99):>7} "
            f"{_ms(m.latency_ms_median):>7} {_ms(m.latency_ms_p99):>7} {_ms(m.transport_ms_median):>9}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def benchmark_teachers() -> dict[str, TeacherSpec]:
    """Return the teachers the backend comparison uses, by name.

    ``trivial`` costs almost nothing, so what remains is the service's own cost.
    ``matmul`` is a small network teacher (hidden width 512, a 512 x 512 matmul per call).
    Alone on one thread of a 2-core EPYC VM it took 2.2 ms for 1 state and 9.7 ms for
    1,024 states per call (medians of 30 calls), so about 7 us per state.
    """
    from policies.testing import FixedTeacherSpec, MatmulTeacherSpec

    return {
        "trivial": FixedTeacherSpec(num_actions=8, observation_shape=(64,)),
        "matmul": MatmulTeacherSpec(obs_dim=64, num_actions=8, hidden_size=512, batch_matmul_size=512),
    }


def compare_backends(
    *,
    backends: Sequence[str] = ("actor", "serve"),
    teachers: Sequence[str] = ("trivial", "matmul"),
    client_counts: Sequence[int] = (1, 4, 8),
    request_sizes: Sequence[int] = (1, 64, 512),
    in_flight: int = 1,
    duration_s: float = 2.0,
    warmup_s: float = 0.5,
    max_batch_size: int = 1024,
    max_wait_ms: Sequence[float] = (0.0,),
    num_cpus_per_replica: float = 1.0,
    repeats: int = 1,
) -> list[ServiceMeasurement]:
    """Measure every backend and teacher at every client count, request size and max wait.

    One service runs per backend, teacher and max wait, and one pool of actor clients
    serves all measurements. The services of the different max waits run side by side
    and take turns, so they see the same background load. Each point is measured
    ``repeats`` times (also in turns) and the window with the median labels/s is kept, so
    its figures come from one window. Ray must be initialised.
    """
    specs = benchmark_teachers()
    results = []
    clients = LoadClients(max(client_counts))
    try:
        for backend in backends:
            for teacher in teachers:
                services = {}
                try:
                    for wait in max_wait_ms:
                        services[wait] = LabelService.start(
                            specs[teacher],
                            backend=backend,
                            max_batch_size=max_batch_size,
                            max_wait_ms=wait,
                            num_cpus_per_replica=num_cpus_per_replica,
                        )
                    for num_clients in client_counts:
                        for request_size in request_sizes:
                            windows: dict[float, list[ServiceMeasurement]] = {wait: [] for wait in services}
                            for _ in range(repeats):
                                for wait, service in services.items():
                                    windows[wait].append(
                                        measure_service(
                                            service,
                                            num_clients=num_clients,
                                            request_size=request_size,
                                            in_flight=in_flight,
                                            duration_s=duration_s,
                                            warmup_s=warmup_s,
                                            clients=clients,
                                        )
                                    )
                            for wait_windows in windows.values():
                                result = sorted(wait_windows, key=lambda window: window.labels_per_s)[repeats // 2]
                                logger.info("measured %s", result.summary())
                                results.append(result)
                finally:
                    for service in services.values():
                        service.shutdown()
    finally:
        clients.close()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Compare the label service backends on this machine and print a table."""
    parser = argparse.ArgumentParser(prog="python -m policies.service.measure", description=main.__doc__)
    parser.add_argument("--backends", nargs="+", default=["actor", "serve"], help="backends to measure")
    parser.add_argument("--teachers", nargs="+", default=["trivial", "matmul"], help="teachers: trivial, matmul")
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 8], help="concurrent client counts")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 64, 512], help="states per request")
    parser.add_argument("--in-flight", type=int, default=1, help="requests each client keeps outstanding")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per point")
    parser.add_argument("--repeats", type=int, default=1, help="windows per point; the median by labels/s is kept")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each window")
    parser.add_argument("--max-batch-size", type=int, default=1024, help="maximum states per teacher call")
    parser.add_argument(
        "--max-wait-ms", nargs="+", type=float, default=[0.0], help="maximum waits for a batch to fill, in ms"
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for ray.init (default: all)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import ray

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        results = compare_backends(
            backends=args.backends,
            teachers=args.teachers,
            client_counts=args.clients,
            request_sizes=args.sizes,
            in_flight=args.in_flight,
            repeats=args.repeats,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
        )
    finally:
        if "serve" in args.backends:
            from ray import serve

            serve.shutdown()
        ray.shutdown()
    print(format_measurements(results))
    if args.json_path:
        with open(args.json_path, "w") as file:
            json.dump([result.summary() for result in results], file, indent=1)


if __name__ == "__main__":
    main()
