"""``shepherd bench sim``: simulator throughput, measured side by side in one run.

Every figure is agent-steps per second with uniformly random actions, the median of
several repeats. Single-core figures come from one process pinned to one CPU, so the
native worlds, their PettingZoo views and MAgent2's C++ engine are compared on equal
terms. Actions are drawn before the timed region for batched worlds. The PettingZoo loops
build their per-agent action dicts inside it, because that is part of using the API.
Peak memory is the peak resident set size (``VmHWM``) of a fresh process that builds a
world and steps it. Ray scaling compares one and two rollout workers on the same population.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIZES = (100, 1_000, 10_000, 100_000)
VIEW_SIZES = (100, 1_000, 10_000)
MAGENT2_SIZES = (100, 1_000, 10_000)
QUICK_SIZES = (100, 1_000)
MEMORY_AGENTS = 100_000
RAY_POPULATION = 20_000

# Goals; the report states each with the measured value and the margin.
GOAL_FASTEST_AT_10K = 2_000_000
GOAL_EVERY_WORLD_AT_10K = 500_000
GOAL_MAGENT2_RATIO = 10.0
GOAL_PEAK_MEMORY_MB = 1024.0
GOAL_RAY_SPEEDUP = 1.6

# MAgent2 battle_v4 places about 4% of the map's cells per team, so a map of side s has room for
# about 0.08 * s^2 agents (45 -> 162, 354 -> 9,800 with magent2 0.3.4).
MAGENT2_AGENTS_PER_CELL = 0.08


@dataclass
class Measurement:
    """One row of the table: a subject at one population size."""

    subject: str
    agents: int
    agent_steps_per_s: float
    repeats: list[float] = field(default_factory=list)


@dataclass
class Goal:
    """A stated goal, the measured value and whether it was met."""

    name: str
    target: float
    measured: float | None
    met: bool
    note: str = ""


# Timing.


def _median_rate(step_batch: Callable[[], int], *, repeats: int, min_seconds: float) -> list[float]:
    """Call ``step_batch`` (returns agent-steps done) until each repeat lasts ``min_seconds``."""
    step_batch()  # warm-up: page in buffers, fill caches
    rates = []
    for _ in range(repeats):
        agent_steps = 0
        start = time.perf_counter()
        while True:
            agent_steps += step_batch()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(agent_steps / elapsed)
    return rates


def measure_world(name: str, num_agents: int, *, repeats: int, min_seconds: float) -> Measurement:
    """Agent-steps/s of a native world stepped through its batched interface."""
    import sim

    world = sim.make_world(name, num_agents=num_agents, seed=0, max_steps=1_000_000)
    world.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, world.num_actions, size=(16, num_agents))  # (16, N)
    cursor = [0]

    def step_batch() -> int:
        for _ in range(4):
            world.step(actions[cursor[0] % len(actions)])
            cursor[0] += 1
        return 4 * num_agents

    rates = _median_rate(step_batch, repeats=repeats, min_seconds=min_seconds)
    return Measurement(name, num_agents, statistics.median(rates), rates)


def _measure_parallel_env(subject: str, env: Any, num_agents: int, *, repeats: int, min_seconds: float) -> Measurement:
    """Agent-steps/s of a PettingZoo ParallelEnv loop, resetting whenever agents run out."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    num_actions = env.action_space(env.possible_agents[0]).n
    random_table = rng.integers(0, num_actions, size=(16, len(env.possible_agents))).tolist()
    cursor = [0]

    def step_batch() -> int:
        agent_steps = 0
        for _ in range(4):
            if not env.agents:
                env.reset()
            agents = env.agents
            row = random_table[cursor[0] % len(random_table)]
            cursor[0] += 1
            env.step(dict(zip(agents, row)))
            agent_steps += len(agents)
        return agent_steps

    rates = _median_rate(step_batch, repeats=repeats, min_seconds=min_seconds)
    return Measurement(subject, num_agents, statistics.median(rates), rates)


def measure_view(name: str, num_agents: int, *, repeats: int, min_seconds: float) -> Measurement:
    """Agent-steps/s of a native world stepped through its PettingZoo view."""
    import sim

    env = sim.parallel_env(name, num_agents=num_agents, max_steps=1_000_000)
    return _measure_parallel_env(f"{name} (PettingZoo view)", env, num_agents, repeats=repeats, min_seconds=min_seconds)


def magent2_map_size(num_agents: int) -> int:
    """Side of the battle_v4 map with room for about ``num_agents`` agents (at least 20)."""
    return max(20, round((num_agents / MAGENT2_AGENTS_PER_CELL) ** 0.5))


def measure_magent2(num_agents: int, *, repeats: int, min_seconds: float) -> Measurement:
    """Agent-steps/s of MAgent2 battle_v4 through its own PettingZoo API (a C++ engine)."""
    from magent2.environments import battle_v4

    env = battle_v4.parallel_env(map_size=magent2_map_size(num_agents), max_cycles=1_000_000)
    env.reset(seed=0)
    actual = len(env.possible_agents)
    return _measure_parallel_env("magent2 battle_v4 (PettingZoo API)", env, actual, repeats=repeats, min_seconds=min_seconds)


# Peak memory, in a fresh process so that earlier measurements do not count.


def _memory_probe(name: str, num_agents: int, steps: int) -> None:
    import resource

    import sim

    world = sim.make_world(name, num_agents=num_agents, seed=0, max_steps=steps + 1)
    world.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        world.step(rng.integers(0, world.num_actions, size=num_agents))
        world.state()
    # VmHWM is the peak of this process's own memory map. ru_maxrss is not: Linux carries
    # it across exec, so a child of a large parent would report the parent's peak.
    peak_kb = None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak_kb = int(line.split()[1])
    except OSError:
        pass
    if peak_kb is None:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"peak_mb": peak_kb / 1024}))


def measure_peak_memory(name: str, num_agents: int, *, steps: int = 20) -> float:
    """Peak resident memory in MB of a fresh process that steps ``name`` with ``num_agents``."""
    command = [sys.executable, "-m", "sim.bench", "--memory-probe", name, str(num_agents), str(steps)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory probe of {name} with {num_agents} agents failed: {completed.stderr.strip()}")
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["peak_mb"])


# Ray scaling.


def measure_ray_scaling(name: str, population: int, *, repeats: int, steps: int) -> dict[str, Any]:
    """Agent-steps/s of one and of two Ray rollout workers on the same population.

    The population is two worlds of ``population // 2`` agents. One worker steps both;
    two workers step one each. Workers run ``steps`` steps per call and return counts
    only, so the figure is simulation and policy work, not data transfer.
    """
    import ray

    from sim.rollout import RandomPolicySpec, WorldSpec, make_backend, split_population

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        template = WorldSpec(name, num_agents=population // 2, seed=0, options={"max_steps": 1_000_000})
        results: dict[str, Any] = {"world": name, "agents": population}
        for num_workers in (1, 2):
            shards = split_population(template, total_agents=population, num_workers=num_workers)
            with make_backend("ray", shards, RandomPolicySpec(seed=0)) as backend:
                backend.run(steps)  # warm-up
                rates = [backend.run(steps).agent_steps_per_second for _ in range(repeats)]
            results[f"workers_{num_workers}"] = statistics.median(rates)
            results[f"workers_{num_workers}_repeats"] = rates
        results["speedup"] = results["workers_2"] / results["workers_1"]
        return results
    finally:
        if started_here:
            ray.shutdown()


# Orchestration.


def pin_to_one_cpu() -> int | None:
    """Pin this process to its last allowed CPU and return it, or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``shepherd bench sim`` to ``parser``."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure; the median is reported (default: 5)")
    parser.add_argument(
        "--min-seconds", type=float, default=0.3,
        help="minimum duration of one timed repeat in seconds (default: 0.3)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small populations and short repeats only; a smoke run, its figures are not comparable",
    )
    parser.add_argument("--skip-ray", action="store_true", help="skip the Ray worker scaling measurement")
    parser.add_argument("--skip-magent2", action="store_true", help="skip the MAgent2 reference loop")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything that ``args`` selects and return the results with the goals checked."""
    import sim

    quick = args.quick
    repeats = 2 if quick else args.repeats
    min_seconds = 0.05 if quick else args.min_seconds
    sizes = QUICK_SIZES if quick else SIZES
    view_sizes = QUICK_SIZES if quick else VIEW_SIZES
    magent2_sizes = QUICK_SIZES if quick else MAGENT2_SIZES
    results: dict[str, Any] = {"machine": machine_description(), "quick": quick, "repeats": repeats}

    # Ray first, before this process is pinned to one CPU: Ray's processes inherit it.
    if not args.skip_ray:
        population = 2_000 if quick else RAY_POPULATION
        log.info("measuring Ray scaling on %d agents", population)
        results["ray"] = measure_ray_scaling("foraging_v0", population, repeats=repeats, steps=5 if quick else 50)

    memory_agents = 10_000 if quick else MEMORY_AGENTS
    results["peak_memory_mb"] = {}
    for name in sim.available_worlds():
        log.info("measuring peak memory of %s at %d agents", name, memory_agents)
        results["peak_memory_mb"][name] = measure_peak_memory(name, memory_agents, steps=5 if quick else 20)
    results["peak_memory_agents"] = memory_agents

    results["cpu"] = pin_to_one_cpu()
    rows: list[Measurement] = []
    for name in sim.available_worlds():
        for num_agents in sizes:
            log.info("measuring %s at %d agents", name, num_agents)
            rows.append(measure_world(name, num_agents, repeats=repeats, min_seconds=min_seconds))
        for num_agents in view_sizes:
            log.info("measuring the PettingZoo view of %s at %d agents", name, num_agents)
            rows.append(measure_view(name, num_agents, repeats=repeats, min_seconds=min_seconds))
    if not args.skip_magent2:
        for num_agents in magent2_sizes:
            log.info("measuring magent2 battle_v4 at about %d agents", num_agents)
            rows.append(measure_magent2(num_agents, repeats=repeats, min_seconds=min_seconds))
    results["rows"] = [asdict(row) for row in rows]
    # Quick figures are not comparable with the goals, so a quick run checks none.
    results["goals"] = [] if quick else [asdict(goal) for goal in check_goals(rows, results)]
    return results


def _rate(rows: list[Measurement], subject: str, agents: int) -> float | None:
    for row in rows:
        if row.subject == subject and row.agents == agents:
            return row.agent_steps_per_s
    return None


def _closest_rate(rows: list[Measurement], subject: str, agents: int) -> tuple[int, float] | None:
    candidates = [row for row in rows if row.subject == subject]
    if not candidates:
        return None
    best = min(candidates, key=lambda row: abs(row.agents - agents))
    return best.agents, best.agent_steps_per_s


def check_goals(rows: list[Measurement], results: dict[str, Any]) -> list[Goal]:
    """Compare the measurements with the stated goals."""
    import sim

    goals: list[Goal] = []
    at_10k = {name: _rate(rows, name, 10_000) for name in sim.available_worlds()}
    measured = {name: rate for name, rate in at_10k.items() if rate is not None}
    if measured:
        fastest = max(measured, key=measured.__getitem__)
        goals.append(make_goal(f"fastest native world at 10,000 agents ({fastest})", GOAL_FASTEST_AT_10K, measured[fastest]))
        for name, rate in measured.items():
            goals.append(make_goal(f"{name} at 10,000 agents", GOAL_EVERY_WORLD_AT_10K, rate))
        magent2 = _closest_rate(rows, "magent2 battle_v4 (PettingZoo API)", 10_000)
        if magent2 is not None:
            agents, rate = magent2
            goals.append(make_goal(
                f"fastest native world vs magent2 battle_v4 ({agents} agents)", GOAL_MAGENT2_RATIO,
                measured[fastest] / rate,
            ))
    for name, peak in results.get("peak_memory_mb", {}).items():
        if results.get("peak_memory_agents") == MEMORY_AGENTS:
            goals.append(make_goal(f"peak memory of {name} at 100,000 agents (MB)", GOAL_PEAK_MEMORY_MB, peak, lower_is_better=True))
    if "ray" in results:
        goals.append(make_goal(
            f"2 Ray workers vs 1 on {results['ray']['agents']:,} agents", GOAL_RAY_SPEEDUP, results["ray"]["speedup"]
        ))
    return goals


def make_goal(name: str, target: float, measured: float, *, lower_is_better: bool = False) -> Goal:
    """Return the goal with its verdict and, when missed, by how much."""
    met = measured <= target if lower_is_better else measured >= target
    note = ""
    if not met:
        if lower_is_better:
            note = f"missed: {measured / target:.2f}x the limit"
        else:
            note = f"missed: {measured / target:.0%} of the goal"
    return Goal(name, target, measured, met, note)


def machine_description() -> dict[str, Any]:
    """Describe the machine the figures come from: CPU model, core count, Python and library versions."""
    import platform

    import numpy

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }


def format_table(results: dict[str, Any]) -> str:
    """Render the results as plain-text tables."""
    lines = [
        f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"Python {results['machine']['python']}, numpy {results['machine']['numpy']}",
        f"single-core figures pinned to CPU {results.get('cpu')}; median of {results['repeats']} repeats",
        "",
        f"{'subject':<44} {'agents':>8} {'agent-steps/s':>15}",
    ]
    for row in results["rows"]:
        lines.append(f"{row['subject']:<44} {row['agents']:>8,} {row['agent_steps_per_s']:>15,.0f}")

    lines += ["", f"peak memory at {results['peak_memory_agents']:,} agents (fresh process, max RSS):"]
    for name, peak in results["peak_memory_mb"].items():
        lines.append(f"  {name:<42} {peak:>10,.0f} MB")

    if "ray" in results:
        ray_results = results["ray"]
        lines += [
            "",
            f"Ray rollout workers on {ray_results['agents']:,} agents of {ray_results['world']}:",
            f"  1 worker  {ray_results['workers_1']:>15,.0f} agent-steps/s",
            f"  2 workers {ray_results['workers_2']:>15,.0f} agent-steps/s  ({ray_results['speedup']:.2f}x)",
        ]

    lines += ["", f"{'goal':<62} {'target':>12} {'measured':>14}  result"]
    for goal in results["goals"]:
        verdict = "met" if goal["met"] else goal["note"]
        lines.append(f"{goal['name']:<62} {goal['target']:>12,.1f} {goal['measured']:>14,.1f}  {verdict}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run the simulator benchmark, print a table or JSON; return the exit status."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.min_seconds > 0:
        raise ValueError(f"--min-seconds must be > 0, got {args.min_seconds}")
    results = run_benchmark(args)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--memory-probe":
    _memory_probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
