"""The ``shepherd`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import numpy as np

log = logging.getLogger("shepherd")


def _demo(args: argparse.Namespace) -> int:
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


def _bench_sim(args: argparse.Namespace) -> int:
    from sim.bench import main as bench_sim_main

    return bench_sim_main(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``shepherd`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="shepherd",
        description="Distill expensive multi-agent teachers into small students, on Ray.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of log messages on stderr (default: INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="step a native world with random actions and print agent-steps/s")
    demo.add_argument("--world", default="foraging_v0", help="native world name (default: foraging_v0)")
    demo.add_argument("--agents", type=int, default=10_000, help="number of agents (default: 10000)")
    demo.add_argument("--steps", type=int, default=300, help="episode length in steps (default: 300)")
    demo.add_argument("--seed", type=int, default=0, help="world and action seed (default: 0)")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bench_sim = benches.add_parser("sim", help="agent-steps/s of the worlds, PettingZoo views, MAgent2 and Ray workers")
    from sim.bench import add_arguments as add_sim_bench_arguments

    add_sim_bench_arguments(bench_sim)
    bench_sim.set_defaults(handler=_bench_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``shepherd`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, TypeError) as error:
        print(f"shepherd: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
