"""Build ``plots/*.png`` and ``report.html`` of a run from its files alone.

``build_report`` reads the run directory with ``read_run`` and renders every figure whose
input file is present and valid. It writes the PNGs to ``plots/`` and one self-contained
HTML page that embeds the same PNGs as base64 data URIs, so the page can be mailed on
its own. The page lists what is missing or invalid at the top. Every string taken from
the run's files is HTML-escaped.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import numpy as np

from dashboards import plots
from dashboards.runfiles import (
    CONFIG_FILE,
    EVALUATION_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    DatasetSummary,
    Evaluation,
    Metrics,
    RunFiles,
    Summary,
    read_run,
)

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
REPORT_FILE = "report.html"


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of the report and the file it is made from."""

    name: str
    """File stem under ``plots/``."""
    title: str
    caption: str
    source: str
    """``metrics.jsonl`` or ``evaluation.json``: the file whose data the figure needs."""
    draw: Callable[[RunFiles], object]
    """Returns a matplotlib Figure from the run's parsed files."""


@dataclasses.dataclass(frozen=True)
class RenderedFigure:
    """A figure rendered to PNG bytes."""

    spec: FigureSpec
    png: bytes


def _draw_throughput(run: RunFiles) -> object:
    assert run.metrics is not None
    x_axis = "wall_s" if np.isfinite(run.metrics.wall_s).all() else "iteration"
    throughput = run.summary.throughput if run.summary is not None else None
    return plots.plot_throughput(run.metrics, throughput=throughput, x_axis=x_axis)


FIGURES = (
    FigureSpec(
        name="learning_curves",
        title="Learning curves",
        caption=(
            "Agreement and KL(teacher || student) on each iteration's labelled states, measured before that "
            "iteration's update. The query strategy picks those states, and uncertainty or margin sampling picks "
            "the ones the student finds hardest, so these curves sit below the evaluation's agreement on uniformly "
            "sampled states. Also the mean return of the episodes that ended in each iteration's rollouts "
            "(iterations where none ended are skipped), and DAgger's beta as a dashed line."
        ),
        source=METRICS_FILE,
        draw=lambda run: plots.plot_learning_curves(run.metrics),
    ),
    FigureSpec(
        name="throughput",
        title="Throughput",
        caption=(
            "Agent-steps/s of the training rollouts (labelling time included), labels/s over labelling time and "
            "train samples/s over training time, per iteration. Dotted lines are the run-wide rates of "
            "summary.json, when present."
        ),
        source=METRICS_FILE,
        draw=_draw_throughput,
    ),
    FigureSpec(
        name="phase_times",
        title="Time per phase",
        caption="Seconds spent in rollout, labelling, training and writing, per iteration.",
        source=METRICS_FILE,
        draw=lambda run: plots.plot_phase_times(run.metrics),
    ),
    FigureSpec(
        name="loss",
        title="Loss terms",
        caption="The learner's mean loss terms per iteration.",
        source=METRICS_FILE,
        draw=lambda run: plots.plot_loss(run.metrics),
    ),
    FigureSpec(
        name="agent_distributions",
        title="Per-agent distributions",
        caption=(
            "Histograms across the evaluation population, per team when there are several: agreement and KL on each "
            "agent's student-visited states, and each agent's mean episode return when the teacher or the student "
            "drives the whole population (dashed lines are the means). A black outline shows returns under random "
            "actions when the run recorded them."
        ),
        source=EVALUATION_FILE,
        draw=lambda run: plots.plot_agent_distributions(run.evaluation),
    ),
    FigureSpec(
        name="by_step",
        title="Agreement and KL by episode step",
        caption="Agreement and KL(teacher || student) per episode step of the evaluation, over all agents.",
        source=EVALUATION_FILE,
        draw=lambda run: plots.plot_by_step(run.evaluation),
    ),
)


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``plots/*.png`` and ``report.html`` into ``run_dir`` from its files; return the report's path.

    Figures whose input file is missing or invalid are left out, their old PNGs are
    removed, and the page names the file at fault.

    Raises:
        RunNotFoundError: ``run_dir`` does not exist or contains neither
            ``metrics.jsonl`` nor ``summary.json``.
    """
    run = read_run(run_dir)
    figures = render_figures(run)

    plots_dir = run.run_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    rendered = {figure.spec.name for figure in figures}
    for figure in figures:
        _write_atomic(plots_dir / f"{figure.spec.name}.png", figure.png)
    for spec in FIGURES:
        if spec.name not in rendered:
            (plots_dir / f"{spec.name}.png").unlink(missing_ok=True)

    report_path = run.run_dir / REPORT_FILE
    _write_atomic(report_path, render_report(run, figures).encode("utf-8"))
    logger.info("wrote %s with %d of %d figures", report_path, len(figures), len(FIGURES))
    return report_path


def render_figures(run: RunFiles) -> list[RenderedFigure]:
    """Render every figure of ``FIGURES`` whose input file ``run`` has, in that order."""
    available = {METRICS_FILE: run.metrics is not None, EVALUATION_FILE: run.evaluation is not None}
    return [
        RenderedFigure(spec=spec, png=plots.figure_to_png(spec.draw(run))) for spec in FIGURES if available[spec.source]
    ]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        temporary.write(data)
    # NamedTemporaryFile is readable by its owner only; give the file the usual mode.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(temporary.name, 0o666 & ~mask)
    os.replace(temporary.name, path)


# The HTML page.


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th.group { background: #eee; }
.notes { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.meta { color: #666; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def render_report(run: RunFiles, figures: Sequence[RenderedFigure]) -> str:
    """Return the report page of ``run`` with ``figures`` embedded as base64 PNG data URIs."""
    built = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f"shepherd run report: {run.scenario}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        (
            f'<p class="meta">Run directory <code>{escape(run.run_dir.name)}</code>, '
            f"report built {built} from the run's files.</p>"
        ),
        _notes_section(run.notes),
        _headline_section(run.summary),
        _figures_section(run, figures),
        _teams_section(run.evaluation),
        _iterations_section(run.metrics),
        _dataset_section(run.dataset),
        _config_section(run.config_text),
        _files_section(run),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _notes_section(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(note)}</li>" for note in notes)
    return f'<section class="notes" id="notes"><h2>Missing or incomplete files</h2><ul>{items}</ul></section>'


def _headline_section(summary: Summary | None) -> str:
    if summary is None:
        return f"<h2>Headline numbers</h2><p>Not available: {SUMMARY_FILE} is missing or invalid.</p>"
    rows = []
    for group, entries in _headline_groups(summary):
        rows.append(f'<tr><th class="group" colspan="3">{escape(group)}</th></tr>')
        for label, value, unit in entries:
            cell_class = "" if isinstance(value, str) else ' class="number"'
            rows.append(
                f"<tr><td>{escape(label)}</td><td{cell_class}>{escape(format_value(value))}</td>"
                f"<td>{escape(unit)}</td></tr>"
            )
    return f'<h2>Headline numbers</h2><table id="headline">{"".join(rows)}</table>'


def _headline_groups(summary: Summary) -> list[tuple[str, list[tuple[str, object, str]]]]:
    throughput, consistency, cost, labels = summary.throughput, summary.consistency, summary.cost, summary.labels
    p10, p50, p90 = consistency.agreement_quantiles or (None, None, None)
    return [
        (
            "Run",
            [
                ("scenario", summary.scenario, ""),
                ("agents", summary.agents, ""),
                ("workers", summary.workers, ""),
                ("teachers", ", ".join(summary.teachers) or None, ""),
                ("iterations", summary.iterations, ""),
                ("wall time", summary.wall_s, "s"),
            ],
        ),
        (
            "Throughput",
            [
                ("training rollouts, labelling time included", throughput.agent_steps_per_s, "agent-steps/s"),
                ("labels over labelling time", throughput.labels_per_s, "labels/s"),
                ("learner samples over training time", throughput.train_samples_per_s, "samples/s"),
                ("population driven by the teacher", throughput.teacher_driven_agent_steps_per_s, "agent-steps/s"),
                ("population driven by the student", throughput.student_driven_agent_steps_per_s, "agent-steps/s"),
                (
                    "student-driven / teacher-driven (computed here)",
                    _ratio(throughput.student_driven_agent_steps_per_s, throughput.teacher_driven_agent_steps_per_s),
                    "",
                ),
            ],
        ),
        (
            "Consistency",
            [
                ("action agreement", consistency.action_agreement, ""),
                ("KL(teacher || student)", consistency.kl_teacher_student, "nats"),
                ("teacher return", consistency.teacher_return, "per agent"),
                ("student return", consistency.student_return, "per agent"),
                ("return ratio (student / teacher)", consistency.return_ratio, ""),
                *_optional_rows(
                    ("random-action return", consistency.random_return, "per agent"),
                    (
                        "normalized return ratio (student - random) / (teacher - random)",
                        consistency.normalized_return_ratio,
                        "",
                    ),
                    (
                        "head to head: student team / teacher-driven opponents",
                        consistency.head_to_head_ratio,
                        "",
                    ),
                ),
                ("per-agent agreement p10", p10, ""),
                ("per-agent agreement p50", p50, ""),
                ("per-agent agreement p90", p90, ""),
            ],
        ),
        (
            "Cost per decision",
            [
                ("teacher parameters", cost.teacher_params, ""),
                ("student parameters", cost.student_params, ""),
                ("teacher time", cost.teacher_us_per_decision, "µs/decision"),
                ("student time", cost.student_us_per_decision, "µs/decision"),
                ("compute ratio (student / teacher)", cost.compute_ratio, ""),
                ("teacher FLOPs", cost.teacher_flops_per_decision, "FLOPs/decision"),
                ("student FLOPs", cost.student_flops_per_decision, "FLOPs/decision"),
            ],
        ),
        (
            "Labels",
            [
                ("states sent to the teacher", labels.requested, ""),
                ("states labelled and stored", labels.labelled, ""),
                ("label fraction (of visited states)", labels.label_fraction, ""),
            ],
        ),
    ]


def _optional_rows(*rows: tuple[str, object, str]) -> list[tuple[str, object, str]]:
    """Keep the rows of keys outside docs/runs.md only when the run wrote them."""
    return [row for row in rows if row[1] is not None]


def _figures_section(run: RunFiles, figures: Sequence[RenderedFigure]) -> str:
    parts = ["<h2>Figures</h2>"]
    rendered = {figure.spec.name for figure in figures}
    left_out = [spec for spec in FIGURES if spec.name not in rendered]
    if left_out:
        items = "".join(
            f"<li>{escape(spec.title)}: {escape(spec.source)} is missing or invalid.</li>" for spec in left_out
        )
        parts.append(f'<p class="notes">Figures left out:</p><ul class="notes">{items}</ul>')
    for figure in figures:
        spec = figure.spec
        data_uri = "data:image/png;base64," + base64.b64encode(figure.png).decode("ascii")
        link = f"{PLOTS_DIR}/{spec.name}.png"
        parts.append(
            f'<figure id="{escape(spec.name)}"><h3>{escape(spec.title)}</h3>'
            f'<img src="{data_uri}" alt="{escape(spec.title)}">'
            f'<figcaption>{escape(spec.caption)} (<a href="{escape(link)}">{escape(link)}</a>)</figcaption></figure>'
        )
    return "\n".join(parts)


def _teams_section(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return ""
    header = (
        "<tr><th>team</th><th>agents</th><th>agents without labels</th><th>mean agreement</th>"
        "<th>mean KL (nats)</th><th>return, all teacher-driven</th><th>return, all student-driven</th>"
        "<th>student team vs teacher opponents</th><th>those opponents' return</th></tr>"
    )
    rows = []
    for team, name in enumerate(evaluation.team_names):
        mask = evaluation.team_ids == team  # (N,)
        agreement = evaluation.agreement_per_agent[mask]
        cells = [
            int(mask.sum()),
            int(np.count_nonzero(~np.isfinite(agreement))),
            _finite_mean(agreement),
            _finite_mean(evaluation.kl_per_agent[mask]),
            _finite_mean(evaluation.teacher_return_per_agent[mask]),
            _finite_mean(evaluation.student_return_per_agent[mask]),
            evaluation.teams.get(name, {}).get("student_return"),
            evaluation.teams.get(name, {}).get("opponent_teacher_return"),
        ]
        numbers = "".join(f'<td class="number">{escape(format_value(cell))}</td>' for cell in cells)
        rows.append(f"<tr><td>{escape(name)}</td>{numbers}</tr>")
    seeds = ", ".join(str(seed) for seed in evaluation.seeds)
    return (
        f"<h2>Evaluation per team</h2><p>{evaluation.agents} agents per evaluation world, seeds {escape(seeds)}; "
        f"returns are per-agent means over the seeds. In the last two columns this team is student-driven "
        f"and every other team teacher-driven, in the same episodes.</p>"
        f'<table id="teams">{header}{"".join(rows)}</table>'
    )


_ITERATION_COLUMNS: tuple[tuple[str, Callable[[Metrics], np.ndarray]], ...] = (
    ("wall s", lambda metrics: metrics.wall_s),
    ("beta", lambda metrics: metrics.beta),
    ("agreement", lambda metrics: metrics.agreement),
    ("KL (nats)", lambda metrics: metrics.kl_teacher_student),
    ("episode return", lambda metrics: metrics.episode_return),
    ("agent-steps/s", lambda metrics: metrics.agent_steps_per_s),
    ("labels", lambda metrics: metrics.labels),
    ("labels/s", lambda metrics: metrics.labels_per_s),
    ("train samples/s", lambda metrics: metrics.train_samples_per_s),
    ("dataset states", lambda metrics: metrics.dataset_states),
    ("total loss", lambda metrics: metrics.loss["total"]),
)


def _iterations_section(metrics: Metrics | None) -> str:
    if metrics is None:
        return ""
    header = "<tr><th>iteration</th>" + "".join(f"<th>{escape(name)}</th>" for name, _ in _ITERATION_COLUMNS) + "</tr>"
    columns = [column(metrics) for _, column in _ITERATION_COLUMNS]
    rows = []
    for row, iteration in enumerate(metrics.iteration):
        cells = "".join(f'<td class="number">{escape(format_value(column[row]))}</td>' for column in columns)
        rows.append(f'<tr><td class="number">{int(iteration)}</td>{cells}</tr>')
    return f'<h2>Iterations</h2><table id="iterations">{header}{"".join(rows)}</table>'


def _dataset_section(dataset: DatasetSummary | None) -> str:
    if dataset is None:
        return ""
    per_iteration = ", ".join(f"{iteration}: {rows:,}" for iteration, rows in dataset.rows_per_iteration.items())
    entries = [
        ("shards", dataset.shards),
        ("rows (labelled states)", dataset.rows),
        ("teachers", ", ".join(dataset.teachers) or None),
        ("rows per iteration", per_iteration or None),
        ("scenario hash", dataset.scenario_hash),
        ("code version", dataset.code_version),
    ]
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(format_value(value))}</td></tr>" for label, value in entries
    )
    return f'<h2>Dataset</h2><p>From <code>{MANIFEST_FILE}</code>.</p><table id="dataset">{rows}</table>'


def _config_section(config_text: str | None) -> str:
    if config_text is None:
        return ""
    return (
        f"<h2>Resolved configuration</h2><p>From <code>{CONFIG_FILE}</code>.</p>"
        f'<pre id="config">{escape(config_text)}</pre>'
    )


def _files_section(run: RunFiles) -> str:
    names = (
        CONFIG_FILE,
        METRICS_FILE,
        EVALUATION_FILE,
        SUMMARY_FILE,
        "student.safetensors",
        "student.json",
        MANIFEST_FILE,
    )
    items = []
    for name in names:
        if (run.run_dir / name).is_file():
            items.append(f'<li><a href="{escape(name)}">{escape(name)}</a></li>')
        else:
            items.append(f"<li>{escape(name)} (missing)</li>")
    return (
        "<h2>Files</h2><p>Links are relative to the run directory, so they work when the page is opened there. "
        "<code>shepherd report RUN_DIR</code> rebuilds this page and <code>plots/</code> from these files; "
        f"<code>shepherd verify RUN_DIR</code> re-hashes the dataset shards.</p><ul>{''.join(items)}</ul>"
    )


# Values.


def format_value(value: object) -> str:
    """Format a table cell: ``n/a`` for missing values, thousands separators for large numbers."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not np.isfinite(number):
            return "n/a"
        if number.is_integer() and abs(number) < 1e15:
            return f"{int(number):,}"
        if abs(number) >= 1e4:
            return f"{number:,.0f}"
        if abs(number) >= 100:
            return f"{number:,.1f}"
        return f"{number:.4g}"
    return str(value)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
