"""Tests of the figure functions on data read from synthetic run files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from matplotlib.figure import Figure

from dashboards import plots
from dashboards.runfiles import (
    Evaluation,
    Metrics,
    read_evaluation,
    read_metrics,
    read_summary,
)
from tests.dashboards.fake_run import FakeRun, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> FakeRun:
    return write_run(tmp_path_factory.mktemp("plots") / "run")


@pytest.fixture(scope="module")
def metrics(fake_run: FakeRun) -> Metrics:
    metrics = read_metrics(fake_run.run_dir / "metrics.jsonl")
    assert metrics is not None
    return metrics


@pytest.fixture(scope="module")
def evaluation(fake_run: FakeRun) -> Evaluation:
    return read_evaluation(fake_run.run_dir / "evaluation.json")


def panel_texts(figure: Figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


@pytest.mark.parametrize(
    "draw",
    [
        lambda metrics, evaluation: plots.plot_learning_curves(metrics),
        lambda metrics, evaluation: plots.plot_throughput(metrics),
        lambda metrics, evaluation: plots.plot_throughput(metrics, x_axis="iteration"),
        lambda metrics, evaluation: plots.plot_phase_times(metrics),
        lambda metrics, evaluation: plots.plot_loss(metrics),
        lambda metrics, evaluation: plots.plot_agent_distributions(evaluation),
        lambda metrics, evaluation: plots.plot_by_step(evaluation),
    ],
    ids=[
        "learning_curves",
        "throughput_wall",
        "throughput_iteration",
        "phase_times",
        "loss",
        "agent_distributions",
        "by_step",
    ],
)
def test_figure_renders_png(
    metrics: Metrics, evaluation: Evaluation, draw: Callable[[Metrics, Evaluation], Figure]
) -> None:
    figure = draw(metrics, evaluation)

    png = plots.figure_to_png(figure)

    assert isinstance(figure, Figure)
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 10_000
    assert panel_texts(figure) == []


def test_learning_curves_beta_axis(metrics: Metrics) -> None:
    figure = plots.plot_learning_curves(metrics)

    assert len(figure.axes) == 4
    assert figure.axes[-1].get_ylabel() == "beta (teacher share)"


def test_learning_curves_skip_null_returns(metrics: Metrics) -> None:
    figure = plots.plot_learning_curves(metrics)

    (line,) = figure.axes[2].get_lines()
    assert line.get_xdata().tolist() == [1, 2, 4, 5, 6, 7]


def test_learning_curves_all_null(metrics: Metrics) -> None:
    empty = np.full(metrics.size, np.nan)
    figure = plots.plot_learning_curves(dataclasses.replace(metrics, agreement=empty, episode_return=empty))

    assert panel_texts(figure) == ["no values", "no values"]
    assert plots.figure_to_png(figure).startswith(PNG_MAGIC)


def test_throughput_reference_lines(fake_run: FakeRun, metrics: Metrics) -> None:
    summary = read_summary(fake_run.run_dir / "summary.json")

    figure = plots.plot_throughput(metrics, throughput=summary.throughput)

    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["per iteration", "whole run 48,214", "teacher-driven 3,120", "student-driven 152,346"]
    assert figure.axes[0].get_ylim()[1] >= 152345.6
    assert figure.axes[0].get_ylim()[0] == 0.0


def test_throughput_invalid_x_axis(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match=r"expected x_axis 'wall_s' or 'iteration', got 'time'"):
        plots.plot_throughput(metrics, x_axis="time")  # type: ignore[arg-type]


def test_phase_times_without_values(metrics: Metrics) -> None:
    empty = {name: np.full(metrics.size, np.nan) for name in metrics.phase_s}

    figure = plots.plot_phase_times(dataclasses.replace(metrics, phase_s=empty))

    assert panel_texts(figure) == ["no values"]


@pytest.mark.parametrize(
    ("team_names", "team_ids", "titles"),
    [
        (("predator", "prey"), None, ["predator: agreement", "prey: agreement"]),
        (("agents",), [0] * 200, ["all agents: agreement"]),
        (("a", "b", "c"), [0] * 100 + [2] * 100, ["a: agreement", "c: agreement"]),
    ],
)
def test_agent_distributions_rows_per_team(
    evaluation: Evaluation, team_names: tuple[str, ...], team_ids: list[int] | None, titles: list[str]
) -> None:
    if team_ids is not None:
        evaluation = dataclasses.replace(evaluation, team_names=team_names, team_ids=np.array(team_ids))

    figure = plots.plot_agent_distributions(evaluation)

    assert len(figure.axes) == 3 * len(titles)
    agreement_titles = [axes.get_title().split(" (")[0] for axes in figure.axes[::3]]
    assert agreement_titles == titles


def test_agent_distributions_counts_unlabelled(evaluation: Evaluation) -> None:
    figure = plots.plot_agent_distributions(evaluation)

    assert figure.axes[0].get_title() == "predator: agreement (2 of 100 agents without labels)"
    assert figure.axes[3].get_title() == "prey: agreement (3 of 100 agents without labels)"


def test_agent_distributions_team_without_labels(evaluation: Evaluation) -> None:
    agreement = evaluation.agreement_per_agent.copy()
    kl = evaluation.kl_per_agent.copy()
    agreement[evaluation.team_ids == 1] = np.nan
    kl[evaluation.team_ids == 1] = np.nan

    figure = plots.plot_agent_distributions(
        dataclasses.replace(evaluation, agreement_per_agent=agreement, kl_per_agent=kl)
    )

    assert panel_texts(figure) == ["no values", "no values"]
    assert figure.axes[3].get_title() == "prey: agreement (100 of 100 agents without labels)"


def test_by_step_breaks_at_null(evaluation: Evaluation) -> None:
    agreement = evaluation.agreement_by_step.copy()
    agreement[30:] = np.nan

    figure = plots.plot_by_step(dataclasses.replace(evaluation, agreement_by_step=agreement))

    (line,) = figure.axes[0].get_lines()
    assert len(line.get_xdata()) == 40
    assert np.isnan(line.get_ydata()[30:]).all()


def test_agent_distributions_random_outline(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = write_run(tmp_path_factory.mktemp("random") / "run", random_baseline=True).run_dir
    evaluation = read_evaluation(run_dir / "evaluation.json")

    figure = plots.plot_agent_distributions(evaluation)

    labels = figure.axes[2].get_legend_handles_labels()[1]
    assert [label.split(" (")[0] for label in labels] == ["teacher", "student", "random actions"]


@pytest.mark.parametrize(
    ("auxiliary", "behaviour_cloning", "scale"),
    [(0.2, 0.0, "linear"), (250.0, 0.0, "symlog"), (250.0, np.nan, "log"), (0.0, 0.0, "linear")],
)
def test_loss_log_scale_for_wide_range(
    metrics: Metrics, auxiliary: float, behaviour_cloning: float, scale: str
) -> None:
    loss = {
        **metrics.loss,
        "auxiliary": np.full(metrics.size, auxiliary),
        "behaviour_cloning": np.full(metrics.size, behaviour_cloning),
    }

    figure = plots.plot_loss(dataclasses.replace(metrics, loss=loss))

    assert figure.axes[0].get_yscale() == scale
