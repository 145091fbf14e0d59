"""Figures of one run, one function per figure, each taking parsed data and returning a Figure.

The functions take the typed values of ``dashboards.runfiles``, never paths, so other
dashboards can call them on data they read or combine. Figures are built on
``matplotlib.figure.Figure`` with an Agg canvas attached inside each function, so no
global backend is set and pyplot is never imported. NaN values, which stand for JSON
``null``, are skipped: lines join the points that have values, histograms count only
finite values, and a panel without any value shows the text "no values".

Shape letters: I iterations, N agent rows, T episode steps.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from dashboards.runfiles import Evaluation, Metrics, Throughput

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TEACHER_COLOR = "tab:orange"
STUDENT_COLOR = "tab:blue"
BETA_COLOR = "tab:gray"
BASELINE_COLOR = "black"
PNG_DPI = 100


def figure_to_png(figure: Figure, *, dpi: int = PNG_DPI) -> bytes:
    """Render ``figure`` to PNG bytes with the Agg canvas."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_learning_curves(metrics: Metrics) -> Figure:
    """Plot agreement, KL(teacher || student) and episode return over iterations.

    DAgger's beta is drawn on a secondary axis of the agreement panel, because the share
    of teacher-controlled actions explains jumps in agreement and return.
    """
    figure, axes = _new_figure(rows=3, columns=1, size=(8.0, 8.0), sharex=True)
    agreement_axes, kl_axes, return_axes = axes[:, 0]

    _plot_series(agreement_axes, metrics.iteration, metrics.agreement, color=STUDENT_COLOR, label="agreement")
    agreement_axes.set_ylabel("agreement")
    agreement_axes.set_ylim(-0.02, 1.02)
    beta_axes = agreement_axes.twinx()
    _plot_series(beta_axes, metrics.iteration, metrics.beta, color=BETA_COLOR, label="beta", linestyle="--")
    beta_axes.set_ylabel("beta (teacher share)", color=BETA_COLOR)
    beta_axes.set_ylim(-0.02, 1.02)
    _merge_legends(agreement_axes, beta_axes)

    _plot_series(kl_axes, metrics.iteration, metrics.kl_teacher_student, color=STUDENT_COLOR)
    kl_axes.set_ylabel("KL(teacher || student), nats")

    _plot_series(return_axes, metrics.iteration, metrics.episode_return, color=STUDENT_COLOR)
    return_axes.set_ylabel("mean episode return")
    return_axes.set_xlabel("iteration")
    _integer_ticks(return_axes)

    figure.suptitle("Learning curves (on this iteration's labelled states, before its update)")
    return figure


def plot_throughput(
    metrics: Metrics,
    *,
    throughput: Throughput | None = None,
    x_axis: Literal["wall_s", "iteration"] = "wall_s",
) -> Figure:
    """Plot agent-steps/s, labels/s and train samples/s per iteration, one panel each.

    Args:
        metrics: Per-iteration rates.
        throughput: Run-wide rates from ``summary.json``, drawn as horizontal reference
            lines: the whole-run value of each rate, and the teacher-driven and student-driven
            agent-steps/s of the same population.
        x_axis: ``"wall_s"`` puts each iteration at the seconds since the run started
            when it ended, ``"iteration"`` at its index.

    Raises:
        ValueError: ``x_axis`` is neither ``"wall_s"`` nor ``"iteration"``.
    """
    if x_axis == "wall_s":
        x, x_label = metrics.wall_s, "seconds since the run started (end of iteration)"
    elif x_axis == "iteration":
        x, x_label = metrics.iteration.astype(np.float64), "iteration"
    else:
        raise ValueError(f"expected x_axis 'wall_s' or 'iteration', got {x_axis!r}")
    panels = (
        ("agent-steps/s", metrics.agent_steps_per_s, "agent_steps_per_s"),
        ("labels/s", metrics.labels_per_s, "labels_per_s"),
        ("train samples/s", metrics.train_samples_per_s, "train_samples_per_s"),
    )

    figure, axes = _new_figure(rows=3, columns=1, size=(10.0, 8.0), sharex=True)
    for axes_, (label, values, summary_key) in zip(axes[:, 0], panels):
        _plot_series(axes_, x, values, color=STUDENT_COLOR, label="per iteration")
        if throughput is not None:
            _reference_line(axes_, getattr(throughput, summary_key), label="whole run", color="black")
        axes_.set_ylabel(label)
    if throughput is not None:
        steps_axes = axes[0, 0]
        _reference_line(
            steps_axes, throughput.teacher_driven_agent_steps_per_s, label="teacher-driven", color=TEACHER_COLOR
        )
        _reference_line(
            steps_axes, throughput.student_driven_agent_steps_per_s, label="student-driven", color=STUDENT_COLOR
        )
    log_steps = False
    if throughput is not None:
        # The evaluation's student-driven rate can be hundreds of times the training rollouts'
        # rate; a log axis keeps the per-iteration curve readable beside it.
        rates = [rate for rate in (throughput.student_driven_agent_steps_per_s, throughput.teacher_driven_agent_steps_per_s)
                 if rate]
        finite = metrics.agent_steps_per_s[np.isfinite(metrics.agent_steps_per_s)]
        if rates and finite.size and finite.min() > 0 and max(rates) > 10 * finite.max():
            axes[0, 0].set_yscale("log")
            log_steps = True
    for index, axes_ in enumerate(axes[:, 0]):
        # Set after drawing, because a fixed limit stops the reference lines from widening the range.
        if not (index == 0 and log_steps):
            axes_.set_ylim(bottom=0.0)
            _thousands_ticks(axes_)
        if axes_.get_legend_handles_labels()[0]:
            axes_.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[-1, 0].set_xlabel(x_label)

    figure.suptitle("Throughput per iteration")
    return figure


def plot_phase_times(metrics: Metrics) -> Figure:
    """Plot seconds per phase (rollout, label, train, write, any others) as stacked bars per iteration."""
    figure, axes = _new_figure(rows=1, columns=1, size=(8.0, 4.0))
    axes_ = axes[0, 0]
    bottom = np.zeros(metrics.size)  # (I,)
    for name, seconds in metrics.phase_s.items():
        heights = np.nan_to_num(seconds, nan=0.0)
        if not np.any(heights):
            continue
        axes_.bar(metrics.iteration, heights, bottom=bottom, label=name)
        bottom += heights
    if not np.any(bottom):
        _say_no_values(axes_)
    else:
        axes_.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes_.set_xlabel("iteration")
    axes_.set_ylabel("seconds")
    _integer_ticks(axes_)

    figure.suptitle("Time per phase and iteration")
    return figure


def plot_loss(metrics: Metrics) -> Figure:
    """Plot the learner's mean loss terms over iterations, one line per term that has values.

    The y axis is logarithmic when the positive values span more than two decades,
    because unweighted terms can differ that much in scale. It is symmetric-logarithmic
    (linear around 0) when some values are 0 or negative.
    """
    figure, axes = _new_figure(rows=1, columns=1, size=(8.0, 4.0))
    axes_ = axes[0, 0]
    plotted = [values for values in metrics.loss.values() if np.isfinite(values).any()]
    for name, values in metrics.loss.items():
        if np.isfinite(values).any():
            _plot_series(axes_, metrics.iteration, values, label=name, linewidth=2.5 if name == "total" else 1.2)
    if not plotted:
        _say_no_values(axes_)
    else:
        axes_.legend(loc="best", fontsize="small")
        finite = np.concatenate([values[np.isfinite(values)] for values in plotted])
        positive = finite[finite > 0]
        if positive.size and positive.max() / positive.min() > 100:
            if (finite <= 0).any():
                # A term of weight zero is often exactly 0, which a log axis cannot show.
                axes_.set_yscale("symlog", linthresh=float(positive.min()))
            else:
                axes_.set_yscale("log")
    axes_.set_xlabel("iteration")
    axes_.set_ylabel("mean loss")
    _integer_ticks(axes_)

    figure.suptitle("Learner loss terms")
    return figure


def plot_agent_distributions(evaluation: Evaluation) -> Figure:
    """Plot histograms across the population of per-agent agreement, KL and episode return.

    With several teams there is one row per team, otherwise one row for all agents. The
    return panel overlays the teacher-driven and student-driven populations with their
    means as dashed lines, plus random-action returns as an outline when the evaluation
    has them. Agents without labelled states have no agreement or KL and
    are counted in the panel title.
    """
    groups = _team_groups(evaluation)
    figure, axes = _new_figure(rows=len(groups), columns=3, size=(12.0, 3.2 * len(groups) + 0.6))
    agreement_bins = np.linspace(0.0, 1.0, 21)

    for row, (team, rows) in enumerate(groups):
        agreement = evaluation.agreement_per_agent[rows]  # (n,) for the n agents of this group
        unlabelled = int(np.count_nonzero(~np.isfinite(agreement)))
        _histogram(axes[row, 0], agreement, bins=agreement_bins, color=STUDENT_COLOR)
        axes[row, 0].set_title(
            f"{team}: agreement ({unlabelled} of {len(agreement)} agents without labels)", fontsize="medium"
        )
        axes[row, 0].set_xlabel("agreement")
        axes[row, 0].set_ylabel("agents")

        _histogram(axes[row, 1], evaluation.kl_per_agent[rows], bins=20, color=STUDENT_COLOR)
        axes[row, 1].set_title(f"{team}: KL(teacher || student)", fontsize="medium")
        axes[row, 1].set_xlabel("nats")

        random_return = evaluation.random_return_per_agent
        _plot_return_histograms(
            axes[row, 2],
            teacher=evaluation.teacher_return_per_agent[rows],
            student=evaluation.student_return_per_agent[rows],
            random=random_return[rows] if random_return is not None else None,
        )
        axes[row, 2].set_title(f"{team}: episode return per agent", fontsize="medium")
        axes[row, 2].set_xlabel("mean episode return")

    seeds = len(evaluation.seeds)
    figure.suptitle(f"Per-agent distributions over {evaluation.agents} agents and {seeds} evaluation seed(s)")
    return figure


def plot_by_step(evaluation: Evaluation) -> Figure:
    """Plot agreement and KL(teacher || student) per episode step, over all agents."""
    figure, axes = _new_figure(rows=2, columns=1, size=(8.0, 6.0), sharex=True)
    steps = np.arange(len(evaluation.agreement_by_step))  # (T,)

    # Gaps stay open here: a step without states (all episodes over) has no value to join across.
    _plot_series(axes[0, 0], steps, evaluation.agreement_by_step, color=STUDENT_COLOR, marker=None, join_gaps=False)
    axes[0, 0].set_ylabel("agreement")
    axes[0, 0].set_ylim(-0.02, 1.02)
    _plot_series(axes[1, 0], steps, evaluation.kl_by_step, color=STUDENT_COLOR, marker=None, join_gaps=False)
    axes[1, 0].set_ylabel("KL(teacher || student), nats")
    axes[1, 0].set_xlabel("episode step")

    figure.suptitle("Agreement and KL by episode step (evaluation, student-visited states)")
    return figure


# Drawing helpers.


def _new_figure(
    *, rows: int, columns: int, size: tuple[float, float], sharex: bool = False
) -> tuple[Figure, np.ndarray]:
    """Return a figure with an Agg canvas and its axes as a (rows, columns) array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=sharex)  # (rows, columns)
    for axes_ in axes.flat:
        axes_.grid(True, alpha=0.3)
    return figure, axes


def _plot_series(
    axes: Axes, x: np.ndarray, y: np.ndarray, *, marker: str | None = "o", join_gaps: bool = True, **style: object
) -> None:
    """Plot y over x; with ``join_gaps`` the line joins the points around NaN values, else it breaks there."""
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        _say_no_values(axes)
        return
    if join_gaps:
        x, y = x[finite], y[finite]
    axes.plot(x, y, marker=marker, markersize=4, **style)


def _histogram(axes: Axes, values: np.ndarray, *, bins: int | np.ndarray, color: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        _say_no_values(axes)
        return
    axes.hist(finite, bins=bins, color=color, alpha=0.8)


def _plot_return_histograms(axes: Axes, *, teacher: np.ndarray, student: np.ndarray, random: np.ndarray | None) -> None:
    """Overlay teacher and student return histograms, and random-action returns as an outline when given."""
    teacher = teacher[np.isfinite(teacher)]
    student = student[np.isfinite(student)]
    random = random[np.isfinite(random)] if random is not None else np.empty(0)
    if teacher.size + student.size + random.size == 0:
        _say_no_values(axes)
        return

    # Shared bins, so the populations can be compared bar by bar.
    bins = np.histogram_bin_edges(np.concatenate([teacher, student, random]), bins=30)
    for values, label, color in ((teacher, "teacher", TEACHER_COLOR), (student, "student", STUDENT_COLOR)):
        if values.size:
            axes.hist(values, bins=bins, color=color, alpha=0.5, label=f"{label} (mean {values.mean():.3g})")
            axes.axvline(values.mean(), color=color, linestyle="--", linewidth=1.5)
    if random.size:
        label = f"random actions (mean {random.mean():.3g})"
        axes.hist(random, bins=bins, histtype="step", color=BASELINE_COLOR, linewidth=1.2, label=label)
        axes.axvline(random.mean(), color=BASELINE_COLOR, linestyle="--", linewidth=1.0)
    axes.legend(loc="best", fontsize="small")


def _reference_line(axes: Axes, value: float | None, *, label: str, color: str) -> None:
    if value is not None and np.isfinite(value):
        axes.axhline(value, color=color, linestyle=":", linewidth=1.5, label=f"{label} {value:,.0f}")


def _merge_legends(left: Axes, right: Axes) -> None:
    handles, labels = left.get_legend_handles_labels()
    right_handles, right_labels = right.get_legend_handles_labels()
    if handles or right_handles:
        left.legend(handles + right_handles, labels + right_labels, loc="lower right", fontsize="small")


def _say_no_values(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no values", transform=axes.transAxes, ha="center", va="center", color="gray")


def _thousands_ticks(axes: Axes) -> None:
    from matplotlib.ticker import StrMethodFormatter

    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _integer_ticks(axes: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _team_groups(evaluation: Evaluation) -> Sequence[tuple[str, np.ndarray]]:
    """Return (name, boolean row mask) per team present, or one group of all agents for a single team."""
    present = [team for team in range(len(evaluation.team_names)) if np.any(evaluation.team_ids == team)]
    if len(present) <= 1:
        return [("all agents", np.ones(evaluation.agents, dtype=bool))]
    return [(evaluation.team_names[team], evaluation.team_ids == team) for team in present]
