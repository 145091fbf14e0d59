"""``shepherd bench sim``: simulator throughput, measured side by side in one run."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``shepherd bench sim`` to ``parser``."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    """Run the simulator benchmark; return the exit status."""
    raise NotImplementedError("shepherd bench sim is not written yet")
