"""End-to-end runs: serial and Ray backends, the run directory, verify and report."""

from __future__ import annotations

import json

import pytest

from distill.run import run
from scenarios.cli import main
from scenarios.schema import build_config

SUMMARY_KEYS = [
    "scenario", "agents", "workers", "teachers", "iterations", "wall_s",
    "throughput.agent_steps_per_s", "throughput.labels_per_s", "throughput.train_samples_per_s",
    "consistency.action_agreement", "consistency.kl_teacher_student", "consistency.return_ratio",
    "consistency.teacher_return", "consistency.student_return",
    "cost.teacher_params", "cost.student_params", "cost.teacher_us_per_decision", "cost.student_us_per_decision",
    "cost.compute_ratio",
    "labels.requested", "labels.labelled", "labels.label_fraction",
]


def tiny_config(backend: str, **sections):
    data = {
        "name": "tiny",
        "world": {"name": "spread_v0", "agents_per_world": 40, "options": {"max_steps": 20, "map_size": 20}},
        "population": {"agents": 80, "workers": 2, "backend": backend, "cpus_per_worker": 0.25},
        "teacher": {"kind": "planner", "options": {"depth": 2}, "cpus_per_replica": 0.25, "max_wait_ms": 1.0},
        "student": {"hidden_sizes": [16]},
        "query": {"label_fraction": 0.25},
        "training": {"iterations": 2, "steps_per_iteration": 20, "updates_per_iteration": 20,
                     "batch_size": 64, "learner_cpus": 0.25},
        "evaluation": {"agents": 20, "agreement_states": 100},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return build_config(data, source="test")


def lookup(summary, dotted):
    value = summary
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    return run(tiny_config("serial"), out=tmp_path_factory.mktemp("serial") / "run", progress=False)


def test_serial_run_writes_every_file(serial_run):
    run_dir = serial_run.run_dir
    for name in ("config.toml", "metrics.jsonl", "summary.json", "evaluation.json", "student.safetensors",
                 "student.json", "dataset/manifest.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "dataset").glob("shard-*.parquet"))
    assert list((run_dir / "plots").glob("*.png"))
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_summary_has_the_stable_keys(serial_run):
    summary = json.loads((serial_run.run_dir / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        lookup(summary, key)
    assert summary["agents"] == 80
    assert summary["teachers"] == ["planner/spread_v0"]
    assert summary["labels"]["labelled"] == summary["labels"]["requested"]
    assert 0.15 < summary["labels"]["label_fraction"] < 0.35


def test_metrics_lines_have_the_documented_keys(serial_run):
    lines = [json.loads(line) for line in (serial_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("iteration", "wall_s", "beta", "agent_steps", "agent_steps_per_s", "labels", "labels_per_s",
                "train_samples", "train_samples_per_s", "dataset_states", "agreement", "kl_teacher_student",
                "episode_return", "loss", "phase_s"):
        assert key in lines[0], key
    assert [line["iteration"] for line in lines] == [0, 1]
    assert lines[1]["dataset_states"] > lines[0]["dataset_states"]


def test_student_checkpoint_loads(serial_run):
    from policies.student import Student

    student = Student.from_checkpoint(serial_run.run_dir / "student")
    assert student.config.hidden_sizes == (16,)


def test_ray_run_matches_serial_run(ray_session, serial_run, tmp_path):
    result = run(tiny_config("ray"), out=tmp_path / "ray", progress=False)
    serial = [json.loads(line) for line in (serial_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    remote = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    for left, right in zip(serial, remote):
        assert left["labels"] == right["labels"]
        assert left["agreement"] == right["agreement"]
        assert left["loss"] == right["loss"]
    assert result.summary["consistency"]["action_agreement"] == serial_run.summary["consistency"]["action_agreement"]
    assert result.summary["label_service"]["labels"] == result.summary["labels"]["requested"]


def test_offline_mode_keeps_label_budget(tmp_path):
    result = run(tiny_config("serial", training={"mode": "offline", "iterations": 1}), out=tmp_path / "run", progress=False)
    labels = result.summary["labels"]
    assert labels["requested"] == labels["visited"]
    assert labels["labelled"] < 0.5 * labels["visited"]


def test_existing_run_directory_is_not_overwritten(serial_run):
    with pytest.raises(FileExistsError, match=r"exists and is not empty; choose another --out"):
        run(tiny_config("serial"), out=serial_run.run_dir, progress=False)


def test_verify_passes_then_names_a_flipped_byte(serial_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(serial_run.run_dir, run_dir)
    assert main(["verify", str(run_dir)]) == 0
    assert "every shard matches" in capsys.readouterr().out

    shard = sorted((run_dir / "dataset").glob("shard-*.parquet"))[-1]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(run_dir)]) == 1
    assert f"MISMATCH {shard.name}: sha256" in capsys.readouterr().out


def test_report_rebuilds_from_files_alone(serial_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "moved"
    shutil.copytree(serial_run.run_dir, run_dir)
    shutil.rmtree(run_dir / "plots")
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert list((run_dir / "plots").glob("*.png"))
    assert "report written to" in capsys.readouterr().out


def test_verify_of_missing_directory_exits_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_manifest_of_wrong_shape_is_reported(serial_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(serial_run.run_dir, run_dir)
    (run_dir / "dataset" / "manifest.json").write_text("[]")
    assert main(["verify", str(run_dir)]) == 1
    assert "expected a JSON object, got list" in capsys.readouterr().err


def test_out_pointing_at_a_file_is_rejected(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(FileExistsError, match=r"is a file; give --out a directory"):
        run(tiny_config("serial"), out=target, progress=False)
    assert target.read_text() == "keep me"


def test_failed_start_removes_the_run_directory(tmp_path, monkeypatch, capsys):
    import distill.run

    def refuse(address):
        raise ConnectionError("no cluster here")

    monkeypatch.setattr(distill.run, "_init_ray", refuse)
    out = tmp_path / "run"
    scenario = tmp_path / "tiny.toml"
    scenario.write_text('name = "tiny"\n[world]\nagents_per_world = 40\n[population]\nagents = 40\n')
    assert main(["run", str(scenario), "--out", str(out), "--address", "auto", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "could not connect to the Ray cluster at --address 'auto': no cluster here" in err
    assert not out.exists(), "a run that never started leaves no directory behind"


def test_unreachable_llm_fails_cleanly_and_keeps_no_stub(tmp_path, monkeypatch, capsys):
    import socket

    # A port on loopback that this test reserves and never listens on.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        monkeypatch.setenv("SHEPHERD_LLM_BASE_URL", f"http://127.0.0.1:{port}/v1")
        monkeypatch.setenv("SHEPHERD_LLM_MODEL", "absent")
        out = tmp_path / "run"
        status = main(["run", "llm", "--out", str(out), "--no-progress", "--set", 'population.backend="serial"',
                       "--set", "teacher.options.timeout_s=0.5", "--set", "teacher.options.max_retries=0"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("shepherd: error: ")
    assert "Traceback" not in err
    assert not out.exists()
