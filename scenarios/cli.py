"""The ``shepherd`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger("shepherd")


def _simulate(args: argparse.Namespace) -> int:
    """Step a native world with random actions and print its throughput."""
    import sim

    world = sim.make_world(args.world, num_agents=args.agents, seed=args.seed, max_steps=args.steps)
    rng = np.random.default_rng(args.seed)
    obs = world.reset()
    print(
        f"{world.name}: {world.num_agents} agents on a {world.map_size}x{world.map_size} map, "
        f"observations {obs.shape}, {world.num_actions} actions"
    )

    agent_steps = 0
    episode_return = np.zeros(world.num_agents, dtype=np.float64)
    start = time.perf_counter()
    while not world.episode_over:
        actions = rng.integers(0, world.num_actions, size=world.num_agents)
        step = world.step(actions)
        agent_steps += int(world.num_agents)
        episode_return += step.reward
    elapsed = time.perf_counter() - start

    print(f"{world.episode_step} steps, {agent_steps:,} agent-steps in {elapsed:.2f} s")
    print(f"throughput: {agent_steps / elapsed:,.0f} agent-steps/s (random actions, one core)")
    print(f"mean return per agent: {episode_return.mean():.3f}; episode metrics: {world.metrics()}")
    return 0


def _bench_teacher(args: argparse.Namespace) -> int:
    from policies.bench import main as bench_teacher_main

    return bench_teacher_main(args)


def _bench_sim(args: argparse.Namespace) -> int:
    from sim.bench import main as bench_sim_main

    return bench_sim_main(args)


DEFAULT_SCENARIO = "spread"
"""The scenario ``make demo`` and ``shepherd demo`` run."""


def _run(args: argparse.Namespace) -> int:
    """Run a scenario end to end and print where its files are."""
    from distill.components import check_config
    from distill.run import run
    from scenarios.loader import load_scenario

    config = load_scenario(args.scenario, args.set, check=check_config)
    result = run(config, out=args.out, address=args.address, progress=not args.no_progress)
    print(_format_summary(result.run_dir, result.summary))
    return 0


def _demo(args: argparse.Namespace) -> int:
    args.scenario = DEFAULT_SCENARIO
    return _run(args)


def _format_summary(run_dir: Any, summary: dict[str, Any]) -> str:
    consistency, throughput, cost, labels = (
        summary["consistency"], summary["throughput"], summary["cost"], summary["labels"],
    )

    def number(value: Any, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    lines = [
        f"run directory: {run_dir}",
        f"scenario {summary['scenario']}: {summary['agents']:,} agents, {summary['workers']} worker(s), "
        f"teacher {', '.join(summary['teachers'])}, {summary['wall_s']:.0f} s",
        f"consistency: action agreement {number(consistency['action_agreement'], '.3f')}, "
        f"KL(teacher||student) {number(consistency['kl_teacher_student'], '.3f')}, "
        f"return ratio {number(consistency['return_ratio'], '.3f')} "
        f"(student {number(consistency['student_return'], '.2f')} / teacher {number(consistency['teacher_return'], '.2f')})",
        f"throughput: {number(throughput['agent_steps_per_s'], ',.0f')} agent-steps/s in training, "
        f"{number(throughput['labels_per_s'], ',.0f')} labels/s, "
        f"{number(throughput['train_samples_per_s'], ',.0f')} train samples/s; "
        f"student-driven {number(throughput['student_vs_teacher_speedup'], ',.0f')}x the teacher-driven agent-steps/s",
        f"cost per decision: student {number(cost['student_us_per_decision'], '.2f')} us, "
        f"teacher {number(cost['teacher_us_per_decision'], '.1f')} us "
        f"(ratio {number(cost['compute_ratio'], '.4f')})",
        f"labels: {labels['labelled']:,} of {labels['visited']:,} visited states "
        f"({number(labels['label_fraction'], '.1%')})",
    ]
    teacher, random = consistency.get("teacher_return"), consistency.get("random_return")
    if teacher is not None and random is not None and teacher <= random:
        lines.append(
            f"warning: the teacher's return ({teacher:.2f}) is no better than random actions' ({random:.2f}), "
            "so agreement with it says little; check the teacher"
        )
    if consistency.get("head_to_head_ratio") is not None:
        lines.append(f"head to head: student team / teacher-driven opponents {consistency['head_to_head_ratio']:.3f}")
    if consistency.get("normalized_return_ratio") is not None:
        lines.append(
            "normalized return ratio (student - random) / (teacher - random): "
            f"{consistency['normalized_return_ratio']:.3f}"
        )
    return "\n".join(lines)


def _make_teacher(args: argparse.Namespace) -> int:
    """Train a large neural teacher on a scenario's teacher's labels and save it as a checkpoint."""
    import torch

    from distill.components import check_config, teacher_spec, world_template
    from policies.features import NearestOffsets
    from policies.training import TrainingConfig, collect_teacher_labels, make_neural_teacher
    from scenarios.loader import load_scenario

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    torch.set_num_threads(args.threads)
    config = load_scenario(args.scenario, args.set, check=check_config)
    source = teacher_spec(config).build()
    world = world_template(config).build()
    features = NearestOffsets.for_state(world.state()) if args.privileged else None
    print(f"labelling {args.steps} steps of {world.num_agents} agents with {source.teacher_id} ...")
    data = collect_teacher_labels(source, world, steps=args.steps, seed=config.seed, features=features)
    spec, report = make_neural_teacher(
        data, args.out, teacher_id=f"neural/{config.name}", version=f"from-{source.teacher_id}@{source.version}",
        features=features, training=TrainingConfig(epochs=args.epochs, seed=config.seed),
    )
    print(
        f"neural teacher saved to {spec.path} from {data.size:,} labelled states: "
        f"train agreement {report.train_agreement:.3f}, validation agreement "
        f"{'n/a' if report.validation_agreement is None else format(report.validation_agreement, '.3f')}"
    )
    overrides = "".join(f" --set '{item}'" for item in args.set)
    kind = "teacher.kind=" + '"neural"'
    options = "teacher.options={ path = " + f'"{spec.path}"' + " }"
    print(f"use it with: shepherd run {args.scenario}{overrides} --set '{kind}' --set '{options}'")
    return 0


def _scenarios(args: argparse.Namespace) -> int:
    """Print each shipped scenario with its one-line description."""
    from scenarios.loader import scenario_descriptions

    rows = scenario_descriptions()
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Re-hash a run's dataset shards; exit 1 naming any that do not match."""
    from pathlib import Path

    from distill.dataset import verify_dataset

    directory = Path(args.run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {directory} not found; give a run directory or its dataset/ directory")
    dataset = directory / "dataset" if (directory / "dataset").is_dir() else directory
    problems = verify_dataset(dataset)
    if problems:
        for problem in problems:
            print(f"MISMATCH {problem}")
        print(f"{len(problems)} shard(s) of {dataset} failed verification", file=sys.stderr)
        return 1
    print(f"{dataset}: every shard matches its sha256 in the manifest")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Rebuild a run's plots and report.html from its files."""
    from dashboards import build_report

    path = build_report(args.run_dir)
    print(f"report written to {path}")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario value, for example --set training.iterations=3 (repeatable; TOML values)",
    )
    parser.add_argument("--out", default=None, help="run directory (default: runs/<scenario>-<UTC timestamp>)")
    parser.add_argument(
        "--address", default=None,
        help="Ray cluster to join: 'auto' or 'ray://host:port' (default: start a local Ray instance)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``shepherd`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="shepherd",
        description="Distill expensive multi-agent teachers into small students, on Ray.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of log messages on stderr (default: WARNING)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a scenario end to end: distill, evaluate, report")
    run.add_argument("scenario", help="a shipped scenario name (see `shepherd scenarios`) or a path to a .toml file")
    _add_run_arguments(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help=f"run the default scenario ({DEFAULT_SCENARIO})")
    _add_run_arguments(demo)
    demo.set_defaults(handler=_demo)

    scenarios = commands.add_parser("scenarios", help="list the shipped scenarios")
    scenarios.set_defaults(handler=_scenarios)

    verify = commands.add_parser("verify", help="re-hash a run's dataset shards and name any that changed")
    verify.add_argument("run_dir", help="a run directory, or a dataset directory with manifest.json")
    verify.set_defaults(handler=_verify)

    report = commands.add_parser("report", help="rebuild a run's plots and report.html from its files")
    report.add_argument("run_dir", help="a run directory")
    report.set_defaults(handler=_report)

    make_teacher = commands.add_parser(
        "make-teacher", help="train a large neural teacher (about 8M parameters) on a scenario's teacher's labels",
    )
    make_teacher.add_argument("scenario", help="the scenario whose world and teacher provide the labels")
    make_teacher.add_argument("--out", required=True, help="checkpoint stem: writes <out>.safetensors and <out>.json")
    make_teacher.add_argument("--steps", type=int, default=50, help="world steps to label, every alive agent each step (default: 50)")
    make_teacher.add_argument("--epochs", type=int, default=10, help="training epochs over the labelled states (default: 10)")
    make_teacher.add_argument("--threads", type=int, default=2, help="torch threads for training (default: 2)")
    make_teacher.add_argument(
        "--privileged", action="store_true",
        help="give the network privileged input: offsets to the nearest targets, food or agents from World.state()",
    )
    make_teacher.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario value")
    make_teacher.set_defaults(handler=_make_teacher)

    simulate = commands.add_parser("simulate", help="step a native world with random actions and print agent-steps/s")
    simulate.add_argument("--world", default="foraging_v0", help="native world name (default: foraging_v0)")
    simulate.add_argument("--agents", type=int, default=10_000, help="number of agents (default: 10000)")
    simulate.add_argument("--steps", type=int, default=300, help="episode length in steps (default: 300)")
    simulate.add_argument("--seed", type=int, default=0, help="world and action seed (default: 0)")
    simulate.set_defaults(handler=_simulate)

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bench_sim = benches.add_parser("sim", help="agent-steps/s of the worlds, PettingZoo views, MAgent2 and Ray workers")
    from sim.bench import add_arguments as add_sim_bench_arguments

    add_sim_bench_arguments(bench_sim)
    bench_sim.set_defaults(handler=_bench_sim)
    bench_teacher = benches.add_parser(
        "teacher", help="labels/s of every teacher kind, alone and through the label service, and cost per decision"
    )
    from policies.bench import add_arguments as add_teacher_bench_arguments

    add_teacher_bench_arguments(bench_teacher)
    bench_teacher.set_defaults(handler=_bench_teacher)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``shepherd`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distill.dataset import DatasetError
    from policies.teacher import TeacherError
    from scenarios.schema import ScenarioError

    try:
        return args.handler(args)
    except ScenarioError as error:
        return _fail(error, 2)
    except DatasetError as error:
        return _fail(error, 1)
    except TeacherError as error:
        # A teacher failing inside a Ray actor arrives wrapped; its cause has the message.
        return _fail(getattr(error, "cause", None) or error, 1)
    except ConnectionError as error:
        return _fail(
            f"could not connect to the Ray cluster at --address {getattr(args, 'address', None)!r}: {error}. "
            "Start one with `ray start --head`, or leave out --address to run on a local instance",
            1,
        )
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        return _fail(error, 2)
    except KeyboardInterrupt:
        print("shepherd: interrupted; files written so far are kept", file=sys.stderr)
        return 130


def _fail(error: object, status: int) -> int:
    print(f"shepherd: error: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
