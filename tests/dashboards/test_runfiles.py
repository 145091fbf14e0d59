"""Tests of the run-file readers on synthetic run directories that follow docs/runs.md."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dashboards.runfiles import (
    RunFilesError,
    RunNotFoundError,
    read_evaluation,
    read_manifest,
    read_metrics,
    read_run,
    read_summary,
)
from tests.dashboards.fake_run import FakeRun, truncate_last_line, write_run


@pytest.fixture
def fake_run(tmp_path: Path) -> FakeRun:
    return write_run(tmp_path / "run")


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Replace the JSON document at ``path`` with ``edit(document)``."""
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def write_metrics_lines(path: Path, lines: list[Any]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


# read_run on whole directories.


def test_read_run_complete(fake_run: FakeRun) -> None:
    run = read_run(fake_run.run_dir)

    assert run.notes == ()
    assert run.scenario == "pursuit-small"
    assert run.config is not None
    assert run.config["population"]["agents"] == 200
    assert run.config_text is not None
    assert run.metrics is not None
    assert run.evaluation is not None
    assert run.summary is not None
    assert run.dataset is not None


def test_read_run_metrics_columns(fake_run: FakeRun) -> None:
    metrics = read_run(fake_run.run_dir).metrics

    assert metrics is not None
    assert metrics.size == 8
    assert metrics.iteration.tolist() == list(range(8))
    assert metrics.agreement.tolist() == [line["agreement"] for line in fake_run.metrics]
    assert metrics.loss["soft_label"][2] == fake_run.metrics[2]["loss"]["soft_label"]
    assert metrics.phase_s["train"][5] == fake_run.metrics[5]["phase_s"]["train"]
    assert np.isnan(metrics.episode_return[[0, 3]]).all()
    assert np.isfinite(metrics.episode_return[[1, 2, 4, 5, 6, 7]]).all()


def test_read_run_evaluation_arrays(fake_run: FakeRun) -> None:
    evaluation = read_run(fake_run.run_dir).evaluation

    assert evaluation is not None
    assert evaluation.agents == 200
    assert evaluation.seeds == (10_000, 10_001)
    assert evaluation.team_names == ("predator", "prey")
    assert np.bincount(evaluation.team_ids).tolist() == [100, 100]
    assert evaluation.teacher_return_per_agent.shape == (200,)
    assert np.flatnonzero(np.isnan(evaluation.agreement_per_agent)).tolist() == [3, 17, 101, 150, 199]
    assert np.flatnonzero(np.isnan(evaluation.kl_per_agent)).tolist() == [3, 17, 101, 150, 199]
    assert evaluation.agreement_by_step.shape == evaluation.kl_by_step.shape == (40,)


def test_read_run_summary_values(fake_run: FakeRun) -> None:
    summary = read_run(fake_run.run_dir).summary

    assert summary is not None
    assert summary.missing_keys == ()
    assert summary.teachers == ("planner-depth2",)
    assert summary.throughput.student_driven_agent_steps_per_s == 152345.6
    assert summary.consistency.agreement_quantiles == (0.6512, 0.8123, 0.9378)
    assert summary.cost.teacher_params is None
    assert summary.cost.student_params == 9733
    assert isinstance(summary.cost.student_params, int)
    assert summary.labels.labelled == 8000


def test_read_run_dataset_summary(fake_run: FakeRun) -> None:
    dataset = read_run(fake_run.run_dir).dataset

    assert dataset is not None
    assert dataset.shards == 8
    assert dataset.rows == fake_run.manifest["rows"]
    assert dataset.teachers == ("planner-depth2",)
    assert dataset.rows_per_iteration == {iteration: 1000 for iteration in range(8)}
    assert dataset.scenario_hash == "ab" * 32


@pytest.mark.parametrize(
    ("missing", "note"),
    [
        ("evaluation.json", "evaluation.json is missing: the run may have stopped before its evaluation"),
        ("summary.json", "summary.json is missing: the run may have stopped before it finished"),
        ("config.toml", "config.toml is missing"),
        ("dataset/manifest.json", "dataset/manifest.json is missing"),
        ("metrics.jsonl", "metrics.jsonl is missing"),
    ],
)
def test_read_run_missing_file_note(
    fake_run: FakeRun, missing: str, note: str, caplog: pytest.LogCaptureFixture
) -> None:
    (fake_run.run_dir / missing).unlink()

    run = read_run(fake_run.run_dir)

    assert any(line.startswith(note) for line in run.notes), run.notes
    assert note in caplog.text


def test_read_run_invalid_evaluation_note(fake_run: FakeRun) -> None:
    edit_json(fake_run.run_dir / "evaluation.json", lambda data: {**data, "agents": 199})

    run = read_run(fake_run.run_dir)

    assert run.evaluation is None
    assert len(run.notes) == 1
    assert "evaluation.json is invalid and is left out" in run.notes[0]
    assert "'teacher_return_per_agent' has 200 entries, expected 199 (agents)" in run.notes[0]


def test_read_run_invalid_toml_keeps_text(fake_run: FakeRun) -> None:
    (fake_run.run_dir / "config.toml").write_text('name = "unterminated\n')

    run = read_run(fake_run.run_dir)

    assert run.config is None
    assert run.config_text == 'name = "unterminated\n'
    assert "config.toml is not valid TOML" in run.notes[0]


def test_read_run_scenario_from_config(fake_run: FakeRun) -> None:
    (fake_run.run_dir / "summary.json").unlink()

    assert read_run(fake_run.run_dir).scenario == "pursuit-small"


def test_read_run_summary_missing_keys_note(fake_run: FakeRun) -> None:
    def drop_keys(data: dict[str, Any]) -> dict[str, Any]:
        del data["cost"]["compute_ratio"]
        del data["labels"]
        return data

    edit_json(fake_run.run_dir / "summary.json", drop_keys)

    run = read_run(fake_run.run_dir)

    assert run.summary is not None
    assert run.summary.missing_keys == ("cost.compute_ratio", "labels")
    assert run.notes == ("summary.json lacks the keys cost.compute_ratio, labels.",)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda root: root / "absent",
            r"run directory .*absent does not exist; pass the directory that `shepherd run`",
        ),
        (lambda root: root / "file.txt", r"run directory .*file\.txt is not a directory"),
        (
            lambda root: root / "empty",
            r"empty is not a run directory: it contains neither metrics\.jsonl nor summary\.json",
        ),
    ],
)
def test_read_run_not_a_run_directory(tmp_path: Path, make: Callable[[Path], Path], match: str) -> None:
    (tmp_path / "file.txt").write_text("not a run")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.toml").write_text('name = "x"\n')

    with pytest.raises(RunNotFoundError, match=match) as raised:
        read_run(make(tmp_path))

    assert isinstance(raised.value, FileNotFoundError)
    assert isinstance(raised.value, ValueError)


# metrics.jsonl.


def test_metrics_truncated_last_line(fake_run: FakeRun) -> None:
    truncate_last_line(fake_run.run_dir / "metrics.jsonl")
    notes: list[str] = []

    metrics = read_metrics(fake_run.run_dir / "metrics.jsonl", notes=notes)

    assert metrics is not None
    assert metrics.iteration.tolist() == list(range(7))
    assert notes == ["metrics.jsonl line 8 is incomplete (the run may have stopped while writing it) and is skipped."]


def test_metrics_nulls_become_nan(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_metrics_lines(path, [{"iteration": 0, "agreement": None, "loss": None, "phase_s": {"rollout": None}}])

    metrics = read_metrics(path)

    assert metrics is not None
    assert math.isnan(metrics.agreement[0])
    assert math.isnan(metrics.loss["total"][0])
    assert math.isnan(metrics.phase_s["rollout"][0])


def test_metrics_missing_keys_note(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_metrics_lines(path, [{"iteration": 0, "beta": 1.0}, {"iteration": 1}])
    notes: list[str] = []

    metrics = read_metrics(path, notes=notes)

    assert metrics is not None
    assert metrics.beta[0] == 1.0
    assert math.isnan(metrics.beta[1])
    assert "metrics.jsonl lacks 'beta' in 1 of 2 iterations." in notes
    assert "metrics.jsonl lacks 'agreement' in 2 of 2 iterations." in notes


def test_metrics_unordered_and_repeated(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_metrics_lines(
        path,
        [{"iteration": 1, "beta": 0.5}, {"iteration": 0, "beta": 1.0}, {"iteration": 1, "beta": 0.25}],
    )
    notes: list[str] = []

    metrics = read_metrics(path, notes=notes)

    assert metrics is not None
    assert metrics.iteration.tolist() == [0, 1]
    assert metrics.beta.tolist() == [1.0, 0.25]
    assert "metrics.jsonl repeats some iterations; the last line of each is used." in notes


def test_metrics_extra_loss_term_kept(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_metrics_lines(path, [{"iteration": 0, "loss": {"total": 1.0, "entropy": 0.3}}])

    metrics = read_metrics(path)

    assert metrics is not None
    assert list(metrics.loss) == ["total", "soft_label", "behaviour_cloning", "auxiliary", "entropy"]
    assert metrics.loss["entropy"][0] == 0.3


@pytest.mark.parametrize("text", ["", "\n\n", '{"iteration": 0, "wall'])
def test_metrics_without_complete_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    notes: list[str] = []

    assert read_metrics(path, notes=notes) is None
    assert notes[-1] == "metrics.jsonl has no complete line: the learning curves and throughput are left out."


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"iteration": 0', {"iteration": 1}], r"line 1: invalid JSON \(.*\); expected one JSON object per iteration"),
        ([[1, 2], {"iteration": 1}], r"line 1: expected a JSON object per iteration, got list"),
        ([{"wall_s": 1.0}], r"line 1: expected a non-negative integer 'iteration', got None"),
        ([{"iteration": -1}], r"line 1: expected a non-negative integer 'iteration', got -1"),
        ([{"iteration": 1.0}], r"line 1: expected a non-negative integer 'iteration', got 1\.0"),
        (
            [{"iteration": 0}, {"iteration": 1, "agreement": "high"}],
            r"line 2, key 'agreement': expected a number or null, got 'high'",
        ),
        ([{"iteration": 0, "beta": True}], r"line 1, key 'beta': expected a number or null, got True"),
        ([{"iteration": 0, "loss": 0.5}], r"line 1: expected 'loss' to be an object of numbers, got float"),
        (
            [{"iteration": 0, "phase_s": {"train": "1s"}}],
            r"line 1, key 'phase_s\.train': expected a number or null, got '1s'",
        ),
    ],
)
def test_metrics_invalid_line(tmp_path: Path, lines: list[Any], match: str) -> None:
    path = tmp_path / "metrics.jsonl"
    write_metrics_lines(path, lines)

    with pytest.raises(RunFilesError, match=match):
        read_metrics(path)


def test_metrics_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"iteration": 0}\n\xff\xfe\n')

    with pytest.raises(RunFilesError, match=r"metrics\.jsonl is not UTF-8 text"):
        read_metrics(path)


# evaluation.json.


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda data: {**data, key: value}


def _drop(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda data: {key: value for key, value in data.items() if key not in keys}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_drop("kl_by_step", "team_ids"), r"lacks the keys kl_by_step, team_ids; docs/runs\.md lists every key"),
        (_set("agents", 0), r"expected 'agents' to be a positive integer, got 0"),
        (_set("agents", "200"), r"expected 'agents' to be a positive integer, got '200'"),
        (_set("kl_per_agent", [0.1] * 3), r"'kl_per_agent' has 3 entries, expected 200 \(agents\)"),
        (_set("kl_by_step", [0.1] * 3), r"'kl_by_step' has 3 entries, expected 40 \(agreement_by_step\)"),
        (_set("agreement_by_step", "none"), r"expected 'agreement_by_step' to be a list of numbers or nulls, got str"),
        (
            _set("teacher_return_per_agent", ["x"] * 200),
            r"key 'teacher_return_per_agent': expected a number or null, got 'x'",
        ),
        (_set("team_names", []), r"expected 'team_names' to be a non-empty list of strings, got \[\]"),
        (_set("team_ids", [0] * 199), r"'team_ids' has 199 entries, expected 200 \(agents\)"),
        (_set("team_ids", [0] * 199 + [2]), r"'team_ids' contains 2, expected indices 0 to 1 into 'team_names'"),
        (_set("seeds", [1.5]), r"expected 'seeds' to be a list of integers, got \[1\.5\]"),
    ],
)
def test_evaluation_invalid(fake_run: FakeRun, edit: Callable[[Any], Any], match: str) -> None:
    path = fake_run.run_dir / "evaluation.json"
    edit_json(path, edit)

    with pytest.raises(RunFilesError, match=match):
        read_evaluation(path)


def test_evaluation_truncated_json(fake_run: FakeRun) -> None:
    path = fake_run.run_dir / "evaluation.json"
    path.write_text(path.read_text()[:500])

    with pytest.raises(
        RunFilesError, match=r"evaluation\.json is not valid JSON \(.* at line \d+, column \d+\); the run may"
    ):
        read_evaluation(path)


def test_evaluation_not_object(fake_run: FakeRun) -> None:
    path = fake_run.run_dir / "evaluation.json"
    path.write_text("[]")

    with pytest.raises(RunFilesError, match=r"evaluation\.json: expected a JSON object, got list"):
        read_evaluation(path)


# summary.json.


def test_summary_quantiles_as_object(fake_run: FakeRun) -> None:
    path = fake_run.run_dir / "summary.json"

    def quantiles_object(data: dict[str, Any]) -> dict[str, Any]:
        data["consistency"]["agreement_quantiles"] = {"p10": 0.5, "p50": None, "p90": 0.9}
        return data

    edit_json(path, quantiles_object)

    assert read_summary(path).consistency.agreement_quantiles == (0.5, None, 0.9)


def _set_nested(group: str, key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda data: {**data, group: {**data[group], key: value}}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("scenario", 3), r"expected 'scenario' to be a string, got 3"),
        (_set("teachers", "planner"), r"expected 'teachers' to be a list of teacher ids, got 'planner'"),
        (_set("wall_s", "10s"), r"key 'wall_s': expected a number or null, got '10s'"),
        (_set("throughput", [1, 2]), r"expected 'throughput' to be an object, got list"),
        (
            _set_nested("cost", "compute_ratio", "low"),
            r"key 'cost\.compute_ratio': expected a number or null, got 'low'",
        ),
        (
            _set_nested("consistency", "agreement_quantiles", [0.1, 0.2]),
            r"agreement_quantiles': expected \[p10, p50, p90\] or \{'p10', 'p50', 'p90'\}, got \[0\.1, 0\.2\]",
        ),
    ],
)
def test_summary_invalid(fake_run: FakeRun, edit: Callable[[Any], Any], match: str) -> None:
    path = fake_run.run_dir / "summary.json"
    edit_json(path, edit)

    with pytest.raises(RunFilesError, match=match):
        read_summary(path)


# dataset/manifest.json.


def _set_shard(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        data["shards"][1][key] = value
        return data

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            _set("format", "other"),
            r"expected a shepherd dataset manifest \(format 'shepherd-dataset'\), got format 'other'",
        ),
        (_drop("shards"), r"expected 'shards' to be a list of shard entries, got None"),
        (_set("shards", [1]), r"shards\[0\]: expected an object, got int"),
        (_set_shard("rows", None), r"shards\[1\]: expected an integer 'rows', got None"),
        (_set_shard("iteration", "1"), r"shards\[1\]: expected an integer 'iteration', got '1'"),
        (
            _set_shard("teachers", "planner"),
            r"shards\[1\]: expected 'teachers' to be a list of teacher ids, got 'planner'",
        ),
    ],
)
def test_manifest_invalid(fake_run: FakeRun, edit: Callable[[Any], Any], match: str) -> None:
    path = fake_run.run_dir / "dataset" / "manifest.json"
    edit_json(path, edit)

    with pytest.raises(RunFilesError, match=match):
        read_manifest(path)


# Keys that runs may write beyond docs/runs.md.


def test_random_baseline_read(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "run", random_baseline=True).run_dir)

    assert run.notes == ()
    assert run.evaluation is not None
    assert run.evaluation.random_return_per_agent is not None
    assert run.evaluation.random_return_per_agent.shape == (200,)
    assert run.summary is not None
    assert run.summary.consistency.normalized_return_ratio == 0.8876


def test_random_baseline_absent(fake_run: FakeRun) -> None:
    run = read_run(fake_run.run_dir)

    assert run.evaluation is not None
    assert run.evaluation.random_return_per_agent is None
    assert run.summary is not None
    assert run.summary.consistency.random_return is None
    assert run.summary.missing_keys == ()


def test_random_baseline_wrong_length(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run", random_baseline=True).run_dir / "evaluation.json"
    edit_json(path, _set("random_return_per_agent", [1.0]))

    with pytest.raises(RunFilesError, match=r"'random_return_per_agent' has 1 entries, expected 200 \(agents\)"):
        read_evaluation(path)
