"""``shepherd bench teacher``: the command runs end to end and checks its goals."""

from __future__ import annotations

import json

import pytest

from policies import bench
from scenarios.cli import main


def test_bench_teacher_quick_json(capsys):
    status = main(["bench", "teacher", "--quick", "--json", "--skip-service", "--skip-llm"])
    assert status == 0
    results = json.loads(capsys.readouterr().out)

    teachers = {rate["teacher"] for rate in results["rates"]}
    assert teachers == {"planner", "scripted", "neural", "mixture"}
    for rate in results["rates"]:
        assert rate["labels_per_s"] > 0
    assert results["matmul_flops_per_s"] > 0
    assert results["teacher_costs"]["neural"]["params"] > 8_000_000
    assert results["student"]["flops_per_decision"] < results["teacher_costs"]["neural"]["flops_per_label"]
    goal_names = [goal["name"] for goal in results["goals"]]
    assert any(name.startswith("neural teacher FLOP/s") for name in goal_names)
    assert any(name.startswith("default student / planner") for name in goal_names)


def test_service_windows_report_overhead_and_utilisation(ray_session, tmp_path):
    teachers = bench.build_teachers(tmp_path, quick=True)
    windows = bench.measure_service_sizes(
        teachers["neural"]["spec"], teachers["neural"]["source"], sizes=[8], clients=[2], duration_s=0.3,
    )
    assert len(windows) == 1
    assert windows[0]["labels_per_s"] > 0
    assert 0.0 <= windows[0]["utilisation"] <= 1.05
    assert windows[0]["overhead_ms_median"] is not None


def test_request_source_sizes_requests_from_recorded_steps():
    import sim

    source = bench.RequestSource(sim.make_world("spread_v0", num_agents=30, seed=0), steps=2, seed=0)
    requests = source.requests(70)
    assert [request.size for request in requests] == [30, 30, 10]
    assert requests[0].state["positions"].shape == (30, 2)


@pytest.mark.parametrize("flag, value, message", [
    ("--threads", "0", r"--threads must be >= 1, got 0"),
    ("--min-seconds", "0", r"--min-seconds must be > 0, got 0.0"),
])
def test_bench_teacher_rejects_bad_options(capsys, flag, value, message):
    assert main(["bench", "teacher", flag, value]) == 2
    assert message in capsys.readouterr().err
