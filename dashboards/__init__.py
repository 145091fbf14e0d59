"""Plots and HTML reports of runs, made only from the files a run writes (docs/runs.md).

``build_report(run_dir)`` writes ``plots/*.png`` and ``report.html``. ``read_run`` and the
``read_*`` functions parse the files into typed values. The ``plot_*`` functions turn those
values into matplotlib figures, so other dashboards can reuse readers and figures alike.
Importing this package imports neither matplotlib nor any other shepherd package.
"""

from dashboards.plots import (
    figure_to_png,
    plot_agent_distributions,
    plot_by_step,
    plot_learning_curves,
    plot_loss,
    plot_phase_times,
    plot_throughput,
)
from dashboards.report import build_report, render_report
from dashboards.runfiles import (
    DatasetSummary,
    Evaluation,
    Metrics,
    RunFiles,
    RunFilesError,
    RunNotFoundError,
    Summary,
    read_evaluation,
    read_manifest,
    read_metrics,
    read_run,
    read_summary,
)

__all__ = [
    "DatasetSummary",
    "Evaluation",
    "Metrics",
    "RunFiles",
    "RunFilesError",
    "RunNotFoundError",
    "Summary",
    "build_report",
    "figure_to_png",
    "plot_agent_distributions",
    "plot_by_step",
    "plot_learning_curves",
    "plot_loss",
    "plot_phase_times",
    "plot_throughput",
    "read_evaluation",
    "read_manifest",
    "read_metrics",
    "read_run",
    "read_summary",
    "render_report",
]
