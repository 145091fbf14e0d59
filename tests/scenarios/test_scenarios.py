"""Scenario files: the shipped ones validate, overrides apply, every schema error is reported."""

from __future__ import annotations

import tomllib

import pytest

from distill.components import check_config
from scenarios.cli import DEFAULT_SCENARIO, main
from scenarios.loader import apply_overrides, dump_toml, load_scenario, parse_override, scenario_names
from scenarios.schema import ScenarioError, build_config

SHIPPED = scenario_names()


def test_shipped_scenarios_cover_every_world():
    assert {"spread", "foraging", "predator_prey", "battle", "pursuit", "simple_spread", "llm"} <= set(SHIPPED)
    assert DEFAULT_SCENARIO in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_is_valid(name):
    config = load_scenario(name, check=check_config)
    assert config.name == name
    assert config.description


@pytest.mark.parametrize("name", ["spread", "foraging", "predator_prey"])
def test_native_scenarios_have_a_thousand_agents(name):
    assert load_scenario(name).population.agents >= 1000


def test_battle_scenario_has_four_hundred_agents():
    config = load_scenario("battle")
    assert config.world.name == "battle_v4"
    assert config.population.agents >= 400


def test_scenarios_command_lists_names_and_descriptions(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHIPPED)
    assert any(line.startswith("battle ") and "MAgent2" in line for line in lines)


# Overrides.


def test_overrides_parse_toml_values():
    assert parse_override("training.iterations=3") == (["training", "iterations"], 3)
    assert parse_override("world.name=foraging_v0") == (["world", "name"], "foraging_v0")
    assert parse_override("student.hidden_sizes=[32, 32]") == (["student", "hidden_sizes"], [32, 32])
    assert parse_override("query.label_fraction=0.2") == (["query", "label_fraction"], 0.2)


def test_overrides_reach_the_config():
    config = load_scenario("spread", ["training.iterations=3", "world.options.view_radius=2", "teacher.options.depth=2"])
    assert config.training.iterations == 3
    assert config.world.options["view_radius"] == 2
    assert config.world.options["num_targets"] == 750, "overriding one option keeps the others"
    assert config.teacher.options["depth"] == 2


def test_override_without_equals_raises():
    with pytest.raises(ValueError, match=r"--set expects key.path=value, got 'training.iterations'"):
        parse_override("training.iterations")


def test_override_into_a_value_raises():
    with pytest.raises(ValueError, match=r"--set seed.x=1: seed is a value, not a table"):
        apply_overrides({"seed": 0}, ["seed.x=1"])


def test_resolved_config_round_trips_through_toml():
    config = load_scenario("battle")
    again = build_config(tomllib.loads(dump_toml(config.to_dict())), source="round trip")
    assert again == config
    assert again.config_hash() == config.config_hash()


# Every schema error names its dotted path, and all are listed at once.


def errors_of(data, check=False):
    with pytest.raises(ScenarioError) as caught:
        config = build_config({"name": "t", **data}, source="t.toml")
        if check:
            problems = check_config(config)
            if problems:
                raise ScenarioError("t.toml", problems)
    return caught.value.errors


@pytest.mark.parametrize("data, message", [
    ({"bogus": 1}, "bogus: unknown key; valid keys here: dagger, description, evaluation"),
    ({"world": {"nmae": "x"}}, "world.nmae: unknown key; valid keys here: agents_per_world, entry_point"),
    ({"world": {"agents_per_world": "10"}}, "world.agents_per_world: expected an integer, got a string ('10')"),
    ({"world": "spread_v0"}, "world: expected a table, got a string ('spread_v0')"),
    ({"training": {"mode": "online"}}, "training.mode: expected one of 'dagger', 'offline', got 'online'"),
    ({"training": {"iterations": 2.5}}, "training.iterations: expected an integer, got a number (2.5)"),
    ({"query": {"label_fraction": "half"}}, "query.label_fraction: expected a number, got a string ('half')"),
    ({"student": {"hidden_sizes": 64}}, "student.hidden_sizes: expected an array, got an integer (64)"),
    ({"student": {"hidden_sizes": [64, "x"]}}, "student.hidden_sizes[1]: expected an integer, got a string ('x')"),
    ({"student": {"aux_heads": 1}}, "student.aux_heads: expected true or false, got an integer (1)"),
    ({"world": {"options": []}}, "world.options: expected a table, got an array ([])"),
    ({"teacher": {"kind": "oracle"}}, "teacher.kind: expected one of 'planner', 'scripted', 'neural', 'llm', 'mixture'"),
])
def test_type_errors_name_the_dotted_path(data, message):
    assert any(error.startswith(message) for error in errors_of(data)), errors_of(data)


def test_missing_name_is_reported():
    with pytest.raises(ScenarioError, match=r"name: missing required key"):
        build_config({}, source="t.toml")


@pytest.mark.parametrize("data, message", [
    ({"query": {"label_fraction": 0.0}}, "query.label_fraction: must be in (0, 1], got 0.0"),
    ({"dagger": {"beta_start": 1.5}}, "dagger.beta_start: must be in [0, 1], got 1.5"),
    ({"training": {"iterations": 0}}, "training.iterations: must be >= 1, got 0"),
    ({"population": {"workers": 0}}, "population.workers: must be >= 1, got 0"),
    ({"evaluation": {"seeds": []}}, "evaluation.seeds: must list at least one seed, got ()"),
    ({"loss": {"soft_label": 0.0}}, "loss: behaviour_cloning or soft_label must be > 0; the auxiliary term alone"),
    ({"population": {"agents": 1500}}, "population.agents: must be a multiple of world.agents_per_world=1000, got 1500; use 1000 or 2000"),
    ({"population": {"agents": 2000, "workers": 3}}, "population.workers: must be at most the 2 world copies"),
    ({"world": {"name": "spred_v0"}}, "world: unknown world 'spred_v0'; available worlds: foraging_v0"),
    ({"world": {"options": {"view": 3}}}, "world: spread_v0: unknown option(s) view; valid options:"),
    ({"world": {"options": {"view_radius": -1}}}, "world.options: spread_v0: view_radius must be >= 0, got -1"),
    ({"teacher": {"options": {"dpeth": 3}}}, "teacher.options: unknown option(s) dpeth for a planner teacher; valid options: depth, discount"),
    ({"teacher": {"kind": "neural", "options": {"depth": 3}}}, "teacher.options: unknown option(s) depth for a neural teacher; valid options: device, path, temperature"),
    ({"teacher": {"kind": "scripted"}}, "teacher.options: no scripted teacher for world 'spread_v0'"),
])
def test_semantic_errors_name_the_dotted_path(data, message):
    errors = errors_of(data, check=True)
    assert any(error.startswith(message) for error in errors), errors


def test_all_errors_are_listed_at_once():
    errors = errors_of({"bogus": 1, "world": {"agents_per_world": "x"}, "training": {"mode": "online"}})
    assert len(errors) == 3


def test_run_command_exits_2_listing_every_error(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nbogus = 1\n[training]\niterations = "many"\nmode = "online"\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 error(s) in the scenario" in err
    assert "bogus: unknown key" in err
    assert "training.iterations: expected an integer" in err
    assert "training.mode: expected one of" in err


def test_run_command_rejects_bad_override(capsys):
    assert main(["run", "spread", "--set", "training.iterations=0"]) == 2
    assert "training.iterations: must be >= 1, got 0" in capsys.readouterr().err


def test_unknown_scenario_lists_shipped_ones(capsys):
    assert main(["run", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "no scenario named 'nonexistent'; shipped scenarios: battle" in err


def test_invalid_toml_is_reported(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    assert main(["run", str(path)]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_directory_as_scenario_is_reported(tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 2
    assert "is a directory; give a scenario .toml file" in capsys.readouterr().err


def test_non_utf8_scenario_is_reported(tmp_path, capsys):
    path = tmp_path / "latin.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert main(["run", str(path)]) == 2
    assert "the file is not UTF-8 text, as TOML requires" in capsys.readouterr().err


def test_summary_warns_on_random_level_teacher():
    from scenarios.cli import _format_summary

    summary = {
        "scenario": "s", "agents": 10, "workers": 1, "teachers": ["t"], "wall_s": 1.0,
        "consistency": {"action_agreement": 1.0, "kl_teacher_student": 0.0, "return_ratio": 1.0,
                        "student_return": 2.0, "teacher_return": 2.0, "random_return": 2.5,
                        "normalized_return_ratio": None, "head_to_head_ratio": 0.9},
        "throughput": {"agent_steps_per_s": 1.0, "labels_per_s": 1.0, "train_samples_per_s": 1.0,
                       "student_vs_teacher_speedup": 1.0},
        "cost": {"student_us_per_decision": 1.0, "teacher_us_per_decision": 2.0, "compute_ratio": 0.5},
        "labels": {"labelled": 1, "visited": 10, "label_fraction": 0.1},
    }
    text = _format_summary("runs/s", summary)
    assert "warning: the teacher's return (2.00) is no better than random actions' (2.50)" in text
    assert "head to head: student team / teacher-driven opponents 0.900" in text
