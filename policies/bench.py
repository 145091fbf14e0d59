"""``shepherd bench teacher``: what labels cost, measured side by side in one run.

The run measures, in order:

1. the machine's ceiling: float32 matrix products of the default neural teacher's
   hidden-layer shape, median of several products;
2. every teacher kind labelling in this process, one state per call (the naive pattern:
   one call per agent per step) and in batches up to 4,096 states;
3. the label service (one replica as a Ray actor, clients as Ray actors) at request
   sizes 1 to 4,096 and at 1, 4 and 8 concurrent clients: labels/s, the service's
   overhead per batch beyond the teacher's own compute, and the teacher's utilisation;
4. per-decision latency (median and p99 of single-state calls) and FLOPs of the teachers
   and the default student, and the student's share of each teacher's compute.

Teachers: the spread_v0 planner at its default depth (privileged, states from a
5,000-agent world), the battle_v4 scripted teacher (privileged, states from real MAgent2),
the default neural teacher (about 8.7M parameters, random weights: its cost does not
depend on them), a mixture of planner and neural teacher, and the LLM teacher against the
fake OpenAI-compatible server (the client's cost only: a real model's time is the
server's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

BATCH_SIZES = (1, 16, 256, 4096)
# The planner takes about a second for 512 states, longer than a measurement window, so its
# windows stay at request sizes that give many batches per window.
SERVICE_SIZES = {"neural": (1, 64, 512, 4096), "planner": (1, 16, 64)}
SERVICE_CLIENTS = {"neural": (1, 4, 8), "planner": (1, 4)}
QUICK_BATCH_SIZES = (1, 16)
PLANNER_AGENTS = 5000
SPREAD_OPTIONS = {"max_steps": 100, "view_radius": 4, "num_targets": 7500}

GOAL_CEILING_FRACTION = 0.8
GOAL_OVERHEAD_MS = 2.0
GOAL_UTILISATION = 0.8
GOAL_STUDENT_SHARE = 0.05


@dataclasses.dataclass
class LabelRate:
    """One teacher at one batch size, called directly in this process."""

    teacher: str
    batch_size: int
    labels_per_s: float
    us_per_label: float
    flops_per_s: float | None


# Requests with privileged context.


class RequestSource:
    """Requests of any size drawn from recorded world steps, with their rows and state."""

    def __init__(self, world: Any, *, steps: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._steps: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None]] = []
        obs = world.reset(seed=seed)
        for _ in range(steps):
            alive = np.flatnonzero(world.alive)
            mask = world.action_mask()
            self._steps.append((obs, alive, world.state(), mask))
            obs = world.step(rng.integers(0, world.num_actions, size=world.num_agents)).obs
        self._rng = rng

    def request(self, size: int, index: int = 0) -> Any:
        """Return a request of up to ``size`` alive states of one recorded step (fewer when the world has fewer)."""
        from policies.teacher import LabelRequest

        obs, alive, state, mask = self._steps[index % len(self._steps)]
        rows = np.sort(self._rng.choice(alive, size=min(size, alive.size), replace=False))
        return LabelRequest(
            obs=np.ascontiguousarray(obs[rows]), rows=rows.astype(np.int64), state=state,
            action_mask=None if mask is None else mask[rows],
        )

    def requests(self, size: int) -> list[Any]:
        """Requests totalling ``size`` states, one per recorded step as needed."""
        requests, remaining, index = [], size, 0
        while remaining > 0:
            request = self.request(remaining, index)
            requests.append(request)
            remaining -= request.size
            index += 1
        return requests


# Direct labelling.


def measure_rates(
    name: str, teacher: Any, source: Callable[[int], list[Any]], *, batch_sizes: Sequence[int], min_seconds: float
) -> list[LabelRate]:
    """Labels/s of ``teacher`` at each batch size; batch 1 is the naive one-call-per-state pattern."""
    flops = teacher.flops_per_label()
    rates = []
    for batch_size in batch_sizes:
        requests = source(batch_size)
        teacher.label_many(requests)  # warm-up
        calls, labels, start = 0, 0, time.perf_counter()
        while True:
            if batch_size == 1:
                for request in requests:
                    teacher.label(request)
            else:
                teacher.label_many(requests)
            calls += 1
            labels += sum(request.size for request in requests)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and calls >= 3:
                break
        per_s = labels / elapsed
        rates.append(LabelRate(name, batch_size, per_s, 1e6 / per_s, flops * per_s if flops else None))
        logger.info("%s at batch %d: %.0f labels/s", name, batch_size, per_s)
    return rates


def single_latency_ms(teacher: Any, request: Any, *, calls: int) -> dict[str, float]:
    """Median and p99 milliseconds of one single-state label call."""
    teacher.label(request)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        teacher.label(request)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99))}


# The teachers.


def build_teachers(workdir: Path, *, quick: bool) -> dict[str, dict[str, Any]]:
    """Build every teacher kind with a request source for it; returns name -> {teacher, spec, source}."""
    import sim
    from policies.checkpoint import save_checkpoint
    from policies.mixture import MixtureSpec
    from policies.networks import build_network, default_teacher_config
    from policies.neural import NeuralTeacherSpec
    from policies.planners import PlannerSpec
    from policies.scripted import ScriptedBattleSpec
    from sim.rollout import WorldSpec

    agents = 500 if quick else PLANNER_AGENTS
    spread = WorldSpec("spread_v0", num_agents=agents, seed=0, options={**SPREAD_OPTIONS, "num_targets": agents * 3 // 2})
    spread_source = RequestSource(spread.build(), steps=4, seed=0)
    planner_spec = PlannerSpec.from_world_spec(spread)

    battle_world = sim.from_pettingzoo(
        __import__("magent2.environments.battle_v4", fromlist=["parallel_env"]).parallel_env(map_size=45), seed=0
    )
    battle_source = RequestSource(battle_world, steps=4, seed=0)

    torch.manual_seed(0)
    observation_shape = tuple(spread.build().observation_shape)
    config = default_teacher_config(observation_shape, 5)
    checkpoint = workdir / "neural_teacher"
    save_checkpoint(build_network(config), config, checkpoint, kind="teacher",
                    metadata={"teacher_id": "neural/bench", "version": "random-init"})
    neural_spec = NeuralTeacherSpec(str(checkpoint))
    mixture_spec = MixtureSpec(teachers=(planner_spec, neural_spec), mode="fixed", weights=(0.5, 0.5))

    return {
        "planner": {"spec": planner_spec, "source": spread_source.requests},
        "scripted": {"spec": ScriptedBattleSpec(), "source": battle_source.requests},
        "neural": {"spec": neural_spec, "source": spread_source.requests},
        "mixture": {"spec": mixture_spec, "source": spread_source.requests},
    }


def measure_llm(*, batch_sizes: Sequence[int], min_seconds: float) -> list[LabelRate]:
    """Labels/s of the LLM teacher's client against the fake server (no model time)."""
    import sim
    from policies.fake_openai import FakeOpenAIServer
    from policies.llm import LLMTeacherSpec

    world = sim.make_world("spread_v0", num_agents=256, seed=0, view_radius=3)
    source = RequestSource(world, steps=2, seed=0)
    with FakeOpenAIServer() as server:
        teacher = LLMTeacherSpec(world="spread_v0", base_url=server.base_url, model="fake-model",
                                 max_concurrency=8, deduplicate=False).build()
        try:
            return measure_rates("llm (fake server)", teacher, source.requests,
                                 batch_sizes=[size for size in batch_sizes if size <= 256], min_seconds=min_seconds)
        finally:
            teacher.close()


# The label service.


def measure_service_sizes(spec: Any, source: Callable[[int], list[Any]], *, sizes: Sequence[int],
                          clients: Sequence[int], duration_s: float) -> list[dict[str, Any]]:
    """Measure the label service with one replica of ``spec`` at each request size and client count."""
    from policies.service import LabelService
    from policies.service.measure import LoadClients, measure_service

    results = []
    pool = LoadClients(max(clients))
    service = LabelService.start(spec, num_replicas=1, max_batch_size=4096, max_wait_ms=0.0, num_cpus_per_replica=0.0001)
    try:
        for size in sizes:
            for count in clients:
                try:
                    measurement = measure_service(
                        service, num_clients=count, request_size=size, duration_s=duration_s, warmup_s=0.5,
                        clients=pool, make_request=lambda request_size, seed: source(request_size)[0],
                        start_timeout_s=300.0,
                    )
                except TimeoutError as error:
                    logger.error("service window of %d clients x %d states failed: %s", count, size, error)
                    continue
                results.append(measurement.summary())
                logger.info("service: %d clients x %d states: %.0f labels/s", count, size, measurement.labels_per_s)
    finally:
        service.shutdown()
        pool.close()
    return results


# The run.


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything and return the results with the goals checked."""
    import ray

    from policies.cost import matmul_flops_per_second, measure_student
    from policies.networks import build_network, default_student_config
    from policies.student import Student
    from sim.bench import machine_description

    torch.set_num_threads(args.threads)
    quick = args.quick
    batch_sizes = QUICK_BATCH_SIZES if quick else BATCH_SIZES
    min_seconds = 0.05 if quick else args.min_seconds
    results: dict[str, Any] = {"machine": machine_description(), "quick": quick, "torch_threads": args.threads}

    # 1. The machine's ceiling.
    results["matmul_flops_per_s"] = matmul_flops_per_second(repeats=3 if quick else 10)

    with tempfile.TemporaryDirectory() as workdir:
        teachers = build_teachers(Path(workdir), quick=quick)

        # 2. Direct labelling, one state per call and batched.
        rates: list[LabelRate] = []
        latency: dict[str, dict[str, float]] = {}
        costs: dict[str, dict[str, Any]] = {}
        for name, entry in teachers.items():
            teacher = entry["spec"].build()
            rates += measure_rates(name, teacher, entry["source"], batch_sizes=batch_sizes, min_seconds=min_seconds)
            latency[name] = single_latency_ms(teacher, entry["source"](1)[0], calls=20 if quick else 200)
            costs[name] = {"params": teacher.param_count(), "flops_per_label": teacher.flops_per_label()}
        if not args.skip_llm:
            rates += measure_llm(batch_sizes=batch_sizes, min_seconds=min_seconds)
        results["rates"] = [dataclasses.asdict(rate) for rate in rates]
        results["latency"] = latency
        results["teacher_costs"] = costs

        # 3. The label service, with the neural and planner teachers.
        if not args.skip_service:
            started_here = not ray.is_initialized()
            if started_here:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                duration = 0.5 if quick else args.service_seconds
                results["service"] = {
                    name: measure_service_sizes(
                        teachers[name]["spec"], teachers[name]["source"],
                        sizes=(1, 64) if quick else SERVICE_SIZES[name],
                        clients=(1, 4) if quick else SERVICE_CLIENTS[name], duration_s=duration,
                    )
                    for name in ("neural", "planner")
                }
            finally:
                if started_here:
                    ray.shutdown()

    # 4. The default student's cost per decision, batched and alone.
    observation_shape = (2 * SPREAD_OPTIONS["view_radius"] + 1,) * 2 + (3,)
    student = Student(build_network(default_student_config(observation_shape, 5)))
    student_batched = measure_student(student, batch_size=1024, repeats=20)
    student_single = measure_student(student, batch_size=1, repeats=200)
    results["student"] = {
        "params": student.param_count(),
        "flops_per_decision": student.flops_per_decision(),
        "us_per_decision_batched": student_batched.us_per_decision,
        "us_per_decision_single": student_single.us_per_decision,
    }
    results["goals"] = [dataclasses.asdict(goal) for goal in check_goals(results)]
    return results


@dataclasses.dataclass
class Goal:
    name: str
    target: float
    measured: float | None
    met: bool
    note: str = ""


def _rate(results: dict[str, Any], teacher: str, batch_size: int) -> dict[str, Any] | None:
    for rate in results["rates"]:
        if rate["teacher"] == teacher and rate["batch_size"] == batch_size:
            return rate
    return None


def check_goals(results: dict[str, Any]) -> list[Goal]:
    """Compare the measurements with the stated goals."""
    from sim.bench import make_goal

    goals = []
    largest = max(rate["batch_size"] for rate in results["rates"] if rate["teacher"] == "neural")
    batched = _rate(results, "neural", largest)
    if batched and batched["flops_per_s"]:
        goals.append(make_goal(
            f"neural teacher FLOP/s at batch {largest} / matmul ceiling", GOAL_CEILING_FRACTION,
            batched["flops_per_s"] / results["matmul_flops_per_s"],
        ))
    for name, windows in results.get("service", {}).items():
        overheads = [window["overhead_ms_median"] for window in windows if window["overhead_ms_median"] is not None]
        if overheads:
            goals.append(make_goal(f"label service overhead per batch, median, {name} (ms)", GOAL_OVERHEAD_MS,
                               max(overheads), lower_is_better=True))
        busy = [window["utilisation"] for window in windows if window["num_clients"] >= 4]
        if busy:
            goals.append(make_goal(f"teacher utilisation with 4+ clients, {name} (lowest)", GOAL_UTILISATION, min(busy)))
    student = results["student"]
    planner = _rate(results, "planner", max(rate["batch_size"] for rate in results["rates"] if rate["teacher"] == "planner"))
    if planner:
        goals.append(make_goal("default student / planner compute per decision (time)", GOAL_STUDENT_SHARE,
                           student["us_per_decision_batched"] / planner["us_per_label"], lower_is_better=True))
    neural_flops = results["teacher_costs"]["neural"]["flops_per_label"]
    goals.append(make_goal("default student / neural teacher compute per decision (FLOPs)", GOAL_STUDENT_SHARE,
                       student["flops_per_decision"] / neural_flops, lower_is_better=True))
    return [Goal(**dataclasses.asdict(goal)) for goal in goals]


def format_table(results: dict[str, Any]) -> str:
    """Render the results as plain-text tables."""
    machine = results["machine"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores; torch threads {results['torch_threads']}",
        f"float32 matmul ceiling (4096x2048 @ 2048x2048): {results['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s",
        "",
        f"{'teacher':<20} {'batch':>6} {'labels/s':>12} {'us/label':>10} {'GFLOP/s':>9}",
    ]
    for rate in results["rates"]:
        flops = "-" if rate["flops_per_s"] is None else f"{rate['flops_per_s'] / 1e9:,.1f}"
        lines.append(f"{rate['teacher']:<20} {rate['batch_size']:>6} {rate['labels_per_s']:>12,.0f} "
                     f"{rate['us_per_label']:>10,.1f} {flops:>9}")

    largest = max(rate["batch_size"] for rate in results["rates"] if rate["teacher"] == "neural")
    batched, single = _rate(results, "neural", largest), _rate(results, "neural", 1)
    if batched and single:
        lines.append(
            f"neural teacher: batch {largest} labels {batched['labels_per_s'] / single['labels_per_s']:.1f}x "
            "faster per state than one state per call"
        )
    lines += ["", f"{'single-state latency':<20} {'median ms':>10} {'p99 ms':>8} {'params':>11} {'FLOPs/label':>12}"]
    for name, values in results["latency"].items():
        cost = results["teacher_costs"][name]
        params = "-" if cost["params"] is None else f"{cost['params']:,}"
        flops = "-" if cost["flops_per_label"] is None else f"{cost['flops_per_label']:,.0f}"
        lines.append(f"{name:<20} {values['median_ms']:>10.3f} {values['p99_ms']:>8.3f} {params:>11} {flops:>12}")
    student = results["student"]
    lines.append(f"{'default student':<20} {student['us_per_decision_single'] / 1e3:>10.3f} {'':>8} "
                 f"{student['params']:>11,} {student['flops_per_decision']:>12,}")
    lines.append(f"default student batched (1024): {student['us_per_decision_batched']:.3f} us per decision")

    for name, windows in results.get("service", {}).items():
        lines += ["", f"label service, one replica of the {name} teacher:",
                  f"{'clients':>7} {'states':>6} {'labels/s':>11} {'batch':>7} {'util':>5} {'overhead ms':>11} {'p99':>6} {'latency ms':>10}"]
        for window in windows:
            lines.append(
                f"{window['num_clients']:>7} {window['request_size']:>6} {window['labels_per_s']:>11,.0f} "
                f"{window['mean_batch_size']:>7,.0f} {window['utilisation']:>5.2f} "
                f"{_ms(window['overhead_ms_median']):>11} {_ms(window['overhead_ms_p99']):>6} {_ms(window['latency_ms_median']):>10}"
            )

    lines += ["", f"{'goal':<72} {'target':>8} {'measured':>10}  result"]
    for goal in results["goals"]:
        verdict = "met" if goal["met"] else goal["note"]
        lines.append(f"{goal['name']:<72} {goal['target']:>8.3g} {goal['measured']:>10.3g}  {verdict}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``shepherd bench teacher`` to ``parser``."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="small sizes and short windows; a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (default: 1)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum seconds per direct measurement (default: 1.0)")
    parser.add_argument("--service-seconds", type=float, default=2.0, help="seconds per label-service window (default: 2.0)")
    parser.add_argument("--skip-service", action="store_true", help="skip the label service measurements")
    parser.add_argument("--skip-llm", action="store_true", help="skip the LLM client measurement")


def main(args: argparse.Namespace) -> int:
    """Run the teacher benchmark, print a table or JSON; return the exit status."""
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not args.min_seconds > 0:
        raise ValueError(f"--min-seconds must be > 0, got {args.min_seconds}")
    results = run_benchmark(args)
    print(json.dumps(results, indent=2, default=float) if args.json else format_table(results))
    return 0
