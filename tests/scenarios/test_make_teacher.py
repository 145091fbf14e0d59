"""``shepherd make-teacher``: a neural teacher from a planner's labels, then a run that uses it."""

from __future__ import annotations

import json

from scenarios.cli import main

TINY = """
name = "tiny"
[world]
name = "spread_v0"
agents_per_world = 40
options = { max_steps = 20, map_size = 20 }
[population]
agents = 40
workers = 1
backend = "serial"
[teacher]
kind = "planner"
options = { depth = 1 }
[student]
hidden_sizes = [16]
[training]
iterations = 1
steps_per_iteration = 10
updates_per_iteration = 5
batch_size = 32
[evaluation]
agents = 20
agreement_states = 50
"""


def test_make_teacher_then_run_with_it(tmp_path, capsys):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    stem = tmp_path / "teacher"
    assert main(["make-teacher", str(scenario), "--out", str(stem), "--steps", "4", "--epochs", "1", "--privileged"]) == 0
    assert "neural teacher saved to" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "teacher.json").read_text())
    assert metadata["kind"] == "teacher"
    assert metadata["metadata"]["teacher_id"] == "neural/tiny"

    out = tmp_path / "run"
    status = main([
        "run", str(scenario), "--out", str(out), "--no-progress",
        "--set", 'teacher.kind="neural"', "--set", f'teacher.options={{ path = "{stem}" }}',
    ])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teachers"] == ["neural/tiny"]
    assert summary["cost"]["teacher_params"] > 8_000_000


def test_make_teacher_rejects_bad_steps(tmp_path, capsys):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    assert main(["make-teacher", str(scenario), "--out", str(tmp_path / "t"), "--steps", "0"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
