"""Rebuild a run's plots and report: ``python -m dashboards RUN_DIR``, the same as ``shepherd report RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dashboards.report import build_report
from dashboards.runfiles import RunFilesError


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report of the run directory named in ``argv``, print its path and return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboards",
        description="Rebuild plots/ and report.html of a run directory from its files alone.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="directory that `shepherd run` wrote")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report_path = build_report(args.run_dir)
    except RunFilesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
