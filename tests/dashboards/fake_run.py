"""Write synthetic run directories that follow docs/runs.md, for the dashboards tests.

The values are made up but shaped like a small DAgger run. Agreement rises and KL falls
over the iterations, and beta halves each iteration. Some iterations end no episode, so
their ``episode_return`` is null, and some agents have no labelled state, so their
agreement is null.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

STEPS_PER_ITERATION = 50
EPISODE_STEPS = 40


@dataclasses.dataclass(frozen=True)
class FakeRun:
    """A written run directory and the objects its JSON files were made from."""

    run_dir: Path
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any]
    summary: dict[str, Any]
    manifest: dict[str, Any]


def write_run(
    run_dir: Path,
    *,
    scenario: str = "pursuit-small",
    iterations: int = 8,
    agents: int = 200,
    team_names: tuple[str, ...] = ("predator", "prey"),
    seed: int = 0,
    random_baseline: bool = False,
) -> FakeRun:
    """Write config.toml, metrics.jsonl, evaluation.json, summary.json and dataset/manifest.json.

    With ``random_baseline``, the files also get the random-action returns that docs/runs.md
    does not list: ``random_return_per_agent``, ``consistency.random_return`` and
    ``consistency.normalized_return_ratio``.
    """
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)

    (run_dir / "config.toml").write_text(_config_text(scenario, agents=agents, iterations=iterations))
    metrics = [_metrics_line(iteration, agents=agents, rng=rng) for iteration in range(iterations)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in metrics))
    evaluation = _evaluation(agents=agents, team_names=team_names, rng=rng)
    summary = _summary(scenario, agents=agents, iterations=iterations, metrics=metrics)
    if random_baseline:
        random_return = rng.normal(-9.0, 1.0, size=agents)  # (N,)
        evaluation["random_return_per_agent"] = [round(float(value), 4) for value in random_return]
        summary["consistency"]["random_return"] = round(float(random_return.mean()), 4)
        summary["consistency"]["normalized_return_ratio"] = 0.8876
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    manifest = _manifest(metrics)
    (run_dir / "dataset").mkdir(exist_ok=True)
    (run_dir / "dataset" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (run_dir / "student.json").write_text(json.dumps({"kind": "mlp", "hidden_sizes": [64, 64]}))

    return FakeRun(run_dir=run_dir, metrics=metrics, evaluation=evaluation, summary=summary, manifest=manifest)


def truncate_last_line(path: Path) -> None:
    """Cut the last line of a JSON-lines file in half, as a crash while writing it would."""
    text = path.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[: last_start + (len(text) - last_start) // 2])


def _config_text(scenario: str, *, agents: int, iterations: int) -> str:
    return (
        f"name = {json.dumps(scenario)}\n"
        'description = "Predators chase prey on a small map."\n'
        "seed = 0\n\n"
        "[world]\n"
        'name = "pursuit_v0"\n'
        f"agents_per_world = {agents}\n\n"
        "[population]\n"
        f"agents = {agents}\n"
        "workers = 2\n"
        'backend = "serial"\n\n'
        "[teacher]\n"
        'kind = "planner"\n\n'
        "[teacher.options]\n"
        "depth = 2\n\n"
        "[training]\n"
        'mode = "dagger"\n'
        f"iterations = {iterations}\n"
        f"steps_per_iteration = {STEPS_PER_ITERATION}\n"
    )


def _metrics_line(iteration: int, *, agents: int, rng: np.random.Generator) -> dict[str, Any]:
    agent_steps = agents * STEPS_PER_ITERATION
    labels = agent_steps // 10
    train_samples = 100 * 256
    phase_s = {
        "rollout": round(float(rng.uniform(0.15, 0.25)), 4),
        "label": round(float(rng.uniform(0.05, 0.08)), 4),
        "train": round(float(rng.uniform(0.3, 0.4)), 4),
        "write": round(float(rng.uniform(0.01, 0.02)), 4),
    }
    agreement = min(0.95, 0.35 + 0.08 * iteration + float(rng.normal(0, 0.01)))
    soft_label = 1.2 * 0.75**iteration
    # Episodes are 40 steps and iterations 50, so some iterations end no episode.
    episode_return = None if iteration in (0, 3) else round(-8.0 + 0.6 * iteration + float(rng.normal(0, 0.2)), 4)
    return {
        "iteration": iteration,
        "wall_s": round(0.8 * (iteration + 1) + 1.5, 3),
        "beta": 0.5**iteration,
        "agent_steps": agent_steps,
        "agent_steps_per_s": round(agent_steps / phase_s["rollout"], 1),
        "visited_states": agent_steps,
        "labels": labels,
        "label_fraction": labels / agent_steps,
        "labels_per_s": round(labels / phase_s["label"], 1),
        "train_samples": train_samples,
        "train_samples_per_s": round(train_samples / phase_s["train"], 1),
        "dataset_states": labels * (iteration + 1),
        "agreement": round(agreement, 4),
        "kl_teacher_student": round(1.5 * 0.7**iteration, 4),
        "episode_return": episode_return,
        "loss": {
            "total": round(soft_label + 0.02, 4),
            "soft_label": round(soft_label, 4),
            "behaviour_cloning": 0.0,
            "auxiliary": 0.2,
        },
        "phase_s": phase_s,
    }


def _evaluation(*, agents: int, team_names: tuple[str, ...], rng: np.random.Generator) -> dict[str, Any]:
    team_ids = (np.arange(agents) * len(team_names)) // agents  # (N,) contiguous blocks per team
    teacher_return = rng.normal(-4.0, 1.0, size=agents) + team_ids  # (N,)
    student_return = teacher_return - rng.gamma(2.0, 0.3, size=agents)  # (N,)
    agreement = np.clip(rng.beta(8.0, 2.0, size=agents), 0.0, 1.0)  # (N,)
    kl = rng.gamma(2.0, 0.1, size=agents)  # (N,)
    unlabelled = {3, 17, 101, 150, 199} & set(range(agents))
    steps = np.arange(EPISODE_STEPS)  # (T,)
    return {
        "seeds": [10_000, 10_001],
        "agents": agents,
        "teacher_return_per_agent": [round(float(value), 4) for value in teacher_return],
        "student_return_per_agent": [round(float(value), 4) for value in student_return],
        "agreement_per_agent": [
            None if row in unlabelled else round(float(agreement[row]), 4) for row in range(agents)
        ],
        "kl_per_agent": [None if row in unlabelled else round(float(kl[row]), 4) for row in range(agents)],
        "agreement_by_step": [round(float(value), 4) for value in 0.9 - 0.2 * np.exp(-steps / 5.0)],
        "kl_by_step": [round(float(value), 4) for value in 0.1 + 0.3 * np.exp(-steps / 5.0)],
        "team_names": list(team_names),
        "team_ids": [int(team) for team in team_ids],
    }


def _summary(scenario: str, *, agents: int, iterations: int, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "agents": agents,
        "workers": 2,
        "teachers": ["planner-depth2"],
        "iterations": iterations,
        "wall_s": metrics[-1]["wall_s"] + 2.25,
        "throughput": {
            "agent_steps_per_s": 48213.7,
            "labels_per_s": 15872.2,
            "train_samples_per_s": 71234.9,
            "teacher_driven_agent_steps_per_s": 3120.4,
            "student_driven_agent_steps_per_s": 152345.6,
        },
        "consistency": {
            "action_agreement": 0.8731,
            "kl_teacher_student": 0.1842,
            "teacher_return": -3.5,
            "student_return": -4.1,
            "return_ratio": 1.1714,
            "agreement_quantiles": [0.6512, 0.8123, 0.9378],
        },
        "cost": {
            "teacher_params": None,
            "student_params": 9733,
            "teacher_us_per_decision": 412.5,
            "student_us_per_decision": 0.8125,
            "compute_ratio": 0.00197,
            "teacher_flops_per_decision": None,
            "student_flops_per_decision": 19200,
        },
        "labels": {"requested": 80000, "labelled": 8000, "label_fraction": 0.1},
    }


def _manifest(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    shards = [
        {
            "file": f"shard-{line['iteration']:05d}.parquet",
            "sha256": f"{line['iteration']:064x}",
            "rows": line["labels"],
            "iteration": line["iteration"],
            "teachers": ["planner-depth2"],
        }
        for line in metrics
    ]
    return {
        "format": "shepherd-dataset",
        "version": 1,
        "scenario_hash": "ab" * 32,
        "code_version": "0.1.0",
        "schema": None,
        "rows": sum(shard["rows"] for shard in shards),
        "shards": shards,
    }
