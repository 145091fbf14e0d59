"""``shepherd bench sim``: the command runs end to end and reports every figure and goal."""

from __future__ import annotations

import json

import pytest

from scenarios.cli import main
from sim import bench


def test_bench_sim_quick_json(capsys):
    status = main(["--log-level", "WARNING", "bench", "sim", "--quick", "--json", "--skip-ray"])
    assert status == 0
    results = json.loads(capsys.readouterr().out)

    subjects = {row["subject"] for row in results["rows"]}
    assert {"foraging_v0", "predator_prey_v0", "spread_v0"} <= subjects
    assert "spread_v0 (PettingZoo view)" in subjects
    assert "magent2 battle_v4 (PettingZoo API)" in subjects
    for row in results["rows"]:
        assert row["agent_steps_per_s"] > 0
        assert len(row["repeats"]) == 2
    assert set(results["peak_memory_mb"]) == {"foraging_v0", "predator_prey_v0", "spread_v0"}
    # The quick run measures no 10,000-agent figure, so it checks no 10,000-agent goal.
    goal_names = [goal["name"] for goal in results["goals"]]
    assert not any("10,000 agents" in name for name in goal_names)


def test_bench_sim_table_lists_goals(capsys):
    status = main(["--log-level", "WARNING", "bench", "sim", "--quick", "--skip-ray", "--skip-magent2"])
    assert status == 0
    table = capsys.readouterr().out
    assert "agent-steps/s" in table
    assert "peak memory at 10,000 agents" in table


def test_goal_reports_the_margin_of_a_miss():
    goal = bench.make_goal("x", 2_000_000, 1_500_000)
    assert not goal.met
    assert goal.note == "missed: 75% of the goal"
    memory = bench.make_goal("memory", 1024, 2048, lower_is_better=True)
    assert memory.note == "missed: 2.00x the limit"


def test_ray_scaling_reports_both_worker_counts(ray_session):
    results = bench.measure_ray_scaling("spread_v0", 400, repeats=1, steps=3)
    assert results["workers_1"] > 0
    assert results["workers_2"] > 0
    assert results["speedup"] == pytest.approx(results["workers_2"] / results["workers_1"])


@pytest.mark.parametrize("flag, value, message", [
    ("--repeats", "0", r"--repeats must be >= 1, got 0"),
    ("--min-seconds", "0", r"--min-seconds must be > 0, got 0.0"),
])
def test_bench_sim_rejects_bad_options(capsys, flag, value, message):
    status = main(["bench", "sim", flag, value])
    assert status == 2
    assert message in capsys.readouterr().err
