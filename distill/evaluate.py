"""Evaluation on fixed seeds: returns, action agreement, KL and throughput.

For every evaluation seed the same world runs three times: driven by the teacher on
every step, driven by the student, and driven by uniformly random legal actions (the
baseline of the normalised return ratio). While the student drives, a uniform sample of
its visited states is labelled by the teacher to measure action agreement and
KL(teacher || student), per agent and per episode step. Worlds with several teams also
run one episode per team in which that team is the student and the others are the
teacher, which gives each team's return against teacher opponents.

The teacher-driven and student-driven episodes are timed in the same process, so their
agent-steps/s compare what distillation buys at run time.

Shape letters: N agents, A actions, T episode steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policies.student import Student
from policies.teacher import LabelRequest, Teacher
from sim.rollout import WorldSpec
from sim.world import World

logger = logging.getLogger(__name__)

Actor = Callable[[World, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass
class EpisodeResult:
    """One evaluation episode."""

    returns: np.ndarray
    """(N,) summed reward of each agent row."""
    agent_steps: int
    policy_s: float
    """Seconds spent choosing actions."""
    wall_s: float
    """Seconds of the whole episode, world steps included."""
    decisions: int
    """Actions chosen (alive agents over all steps)."""


def teacher_actor(teacher: Teacher) -> Actor:
    """Return an actor that labels every alive agent with ``teacher`` and takes the argmax."""

    def act(world: World, obs: np.ndarray, alive_rows: np.ndarray) -> np.ndarray:
        mask = world.action_mask()
        request = LabelRequest(
            obs=np.ascontiguousarray(obs[alive_rows]), rows=alive_rows.astype(np.int64),
            state=world.state(), action_mask=None if mask is None else mask[alive_rows],
        )
        return teacher.label(request).probs.argmax(axis=1)

    return act


def student_actor(student: Student) -> Actor:
    """Return an actor that takes the student's argmax for every alive agent."""

    def act(world: World, obs: np.ndarray, alive_rows: np.ndarray) -> np.ndarray:
        mask = world.action_mask()
        alive_mask = None if mask is None else mask[alive_rows]
        return student.logits(obs[alive_rows], alive_mask).argmax(axis=1)

    return act


def random_actor(seed: int) -> Actor:
    """Return an actor that picks uniformly random legal actions."""
    rng = np.random.default_rng(seed)

    def act(world: World, obs: np.ndarray, alive_rows: np.ndarray) -> np.ndarray:
        mask = world.action_mask()
        if mask is None:
            return rng.integers(0, world.num_actions, size=alive_rows.size)
        weights = mask[alive_rows] * rng.random((alive_rows.size, world.num_actions))
        return weights.argmax(axis=1)

    return act


def run_episode(
    world: World,
    *,
    seed: int,
    actors: Sequence[Actor],
    team_actor: np.ndarray | None = None,
    on_step: Callable[[World, np.ndarray, np.ndarray], None] | None = None,
) -> EpisodeResult:
    """Run one episode from ``reset(seed)``; team ``k`` of the world acts with ``actors[team_actor[k]]``.

    ``on_step(world, obs, alive_rows)`` runs before each step and is not timed as policy.
    """
    obs = world.reset(seed=seed)
    returns = np.zeros(world.num_agents)
    team_actor = np.zeros(len(world.team_names), dtype=np.int64) if team_actor is None else team_actor
    row_actor = team_actor[world.team_ids]  # (N,)
    policy_s, agent_steps = 0.0, 0
    excluded_s = 0.0
    start = time.perf_counter()
    while not world.episode_over:
        alive_rows = np.flatnonzero(world.alive)
        if on_step is not None:
            hook_start = time.perf_counter()
            on_step(world, obs, alive_rows)
            excluded_s += time.perf_counter() - hook_start
        actions = np.full(world.num_agents, -1, dtype=np.int64)
        policy_start = time.perf_counter()
        for index, actor in enumerate(actors):
            rows = alive_rows[row_actor[alive_rows] == index]
            if rows.size:
                actions[rows] = actor(world, obs, rows)
        policy_s += time.perf_counter() - policy_start
        step = world.step(actions)
        returns += step.reward
        agent_steps += int(alive_rows.size)
        obs = step.obs
    wall_s = time.perf_counter() - start - excluded_s
    return EpisodeResult(returns, agent_steps, policy_s, wall_s, agent_steps)


class AgreementProbe:
    """Labels a uniform sample of student-visited states with the teacher, per agent and per step."""

    def __init__(self, teacher: Teacher, student: Student, *, num_agents: int, max_steps: int, per_step: float, seed: int) -> None:
        self.teacher = teacher
        self.student = student
        self.per_step = per_step
        self._rng = np.random.default_rng(seed)
        self.agent_agree = np.zeros(num_agents)
        self.agent_kl = np.zeros(num_agents)
        self.agent_count = np.zeros(num_agents)
        self.step_agree = np.zeros(max_steps)
        self.step_kl = np.zeros(max_steps)
        self.step_count = np.zeros(max_steps)

    def __call__(self, world: World, obs: np.ndarray, alive_rows: np.ndarray) -> None:
        count = min(alive_rows.size, int(self.per_step) + int(self._rng.random() < self.per_step % 1))
        if count == 0:
            return
        rows = np.sort(self._rng.choice(alive_rows, size=count, replace=False))
        mask = world.action_mask()
        row_mask = None if mask is None else mask[rows]
        labels = self.teacher.label(LabelRequest(
            obs=np.ascontiguousarray(obs[rows]), rows=rows.astype(np.int64), state=world.state(), action_mask=row_mask,
        ))
        student_probs = self.student.probs(obs[rows], row_mask)
        agree = (labels.probs.argmax(axis=1) == student_probs.argmax(axis=1)).astype(float)
        kl = kl_divergence(labels.probs, student_probs)
        step = min(world.episode_step, len(self.step_count) - 1)
        np.add.at(self.agent_agree, rows, agree)
        np.add.at(self.agent_kl, rows, kl)
        np.add.at(self.agent_count, rows, 1)
        self.step_agree[step] += agree.sum()
        self.step_kl[step] += kl.sum()
        self.step_count[step] += count


def kl_divergence(teacher_probs: np.ndarray, student_probs: np.ndarray) -> np.ndarray:
    """(B,) KL(teacher || student) in nats; zero-probability teacher actions add nothing."""
    teacher = teacher_probs.astype(np.float64)
    student = np.clip(student_probs.astype(np.float64), 1e-12, 1.0)
    safe_teacher = np.where(teacher > 0, teacher, 1.0)
    return (teacher * (np.log(safe_teacher) - np.log(student))).sum(axis=1)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator != 0 and math.isfinite(denominator) else None


def _mean_or_none(values: np.ndarray, counts: np.ndarray) -> list[float | None]:
    return [float(v / c) if c else None for v, c in zip(values, counts)]


def evaluate(
    *,
    teacher: Teacher,
    student: Student,
    worlds: Sequence[WorldSpec],
    agreement_states: int,
    seed: int,
) -> dict[str, Any]:
    """Evaluate ``student`` against ``teacher`` on each world spec (one per evaluation seed).

    Returns the contents of ``evaluation.json`` plus a ``headline`` dict for ``summary.json``.
    """
    results: dict[str, list[EpisodeResult]] = {"teacher": [], "student": [], "random": []}
    per_team: dict[str, dict[str, list[float]]] = {}
    probe = None

    for episode, spec in enumerate(worlds):
        world = spec.build()
        if probe is None:
            per_step = agreement_states / (len(worlds) * world.max_steps)
            probe = AgreementProbe(
                teacher, student, num_agents=world.num_agents, max_steps=world.max_steps, per_step=per_step, seed=seed,
            )
            team_names, team_ids = list(world.team_names), world.team_ids.tolist()

        logger.info("evaluation episode %d of %d: teacher-driven", episode + 1, len(worlds))
        results["teacher"].append(run_episode(world, seed=spec.seed, actors=[teacher_actor(teacher)]))
        logger.info("evaluation episode %d of %d: student-driven", episode + 1, len(worlds))
        results["student"].append(run_episode(world, seed=spec.seed, actors=[student_actor(student)], on_step=probe))
        results["random"].append(run_episode(world, seed=spec.seed, actors=[random_actor(spec.seed)]))

        # Teams: each team in turn is the student against teacher opponents.
        if len(world.team_names) > 1:
            teacher_returns = results["teacher"][-1].returns
            for team, name in enumerate(world.team_names):
                assignment = np.ones(len(world.team_names), dtype=np.int64)
                assignment[team] = 0
                mixed = run_episode(
                    world, seed=spec.seed, actors=[student_actor(student), teacher_actor(teacher)], team_actor=assignment,
                )
                rows = world.team_ids == team
                record = per_team.setdefault(name, {"student": [], "teacher": [], "opponent_teacher": []})
                record["student"].append(float(mixed.returns[rows].mean()))
                record["teacher"].append(float(teacher_returns[rows].mean()))
                record["opponent_teacher"].append(float(mixed.returns[~rows].mean()))

    return _summarise(results, probe, per_team, team_names, team_ids, worlds)


def _summarise(
    results: dict[str, list[EpisodeResult]],
    probe: AgreementProbe,
    per_team: dict[str, dict[str, list[float]]],
    team_names: list[str],
    team_ids: list[int],
    worlds: Sequence[WorldSpec],
) -> dict[str, Any]:
    def mean_returns(kind: str) -> np.ndarray:
        return np.mean([episode.returns for episode in results[kind]], axis=0)  # (N,)

    def rate(kind: str) -> float:
        steps = sum(episode.agent_steps for episode in results[kind])
        return steps / sum(episode.wall_s for episode in results[kind])

    teacher_return = float(mean_returns("teacher").mean())
    student_return = float(mean_returns("student").mean())
    random_return = float(mean_returns("random").mean())
    agreement = probe.agent_agree.sum() / max(probe.agent_count.sum(), 1)
    kl = probe.agent_kl.sum() / max(probe.agent_count.sum(), 1)
    agent_agreement = np.array([a / c if c else np.nan for a, c in zip(probe.agent_agree, probe.agent_count)])
    quantiles = {
        f"p{q}": float(np.nanpercentile(agent_agreement, q)) if np.isfinite(agent_agreement).any() else None
        for q in (10, 50, 90)
    }
    def us_per_decision(kind: str) -> float:
        decisions = sum(episode.decisions for episode in results[kind])
        return sum(episode.policy_s for episode in results[kind]) / max(decisions, 1) * 1e6

    teams = {}
    for name, record in per_team.items():
        student_team, teacher_team = float(np.mean(record["student"])), float(np.mean(record["teacher"]))
        opponent = float(np.mean(record["opponent_teacher"]))
        teams[name] = {
            "student_return": student_team,
            "teacher_return": teacher_team,
            "return_ratio": _ratio(student_team, teacher_team),
            "opponent_teacher_return": opponent,
            "ratio_to_opponent": _ratio(student_team, opponent),
        }

    evaluation = {
        "seeds": [spec.seed for spec in worlds],
        "agents": int(len(team_ids)),
        "team_names": team_names,
        "team_ids": team_ids,
        "teacher_return_per_agent": mean_returns("teacher").tolist(),
        "student_return_per_agent": mean_returns("student").tolist(),
        "random_return_per_agent": mean_returns("random").tolist(),
        "agreement_per_agent": _mean_or_none(probe.agent_agree, probe.agent_count),
        "kl_per_agent": _mean_or_none(probe.agent_kl, probe.agent_count),
        "agreement_by_step": _mean_or_none(probe.step_agree, probe.step_count),
        "kl_by_step": _mean_or_none(probe.step_kl, probe.step_count),
        "teams": teams,
    }
    # A head-to-head ratio compares like with like only when every team has the same size.
    sizes = np.bincount(np.asarray(team_ids, dtype=np.int64), minlength=len(team_names)) if team_ids else np.zeros(0)
    symmetric = len(team_names) > 1 and bool((sizes == sizes[0]).all())
    head_to_head = [
        team["ratio_to_opponent"] for team in teams.values() if symmetric and team["ratio_to_opponent"] is not None
    ]
    headline = {
        "head_to_head_ratio": float(np.mean(head_to_head)) if head_to_head else None,
        "action_agreement": float(agreement),
        "kl_teacher_student": float(kl),
        "teacher_return": teacher_return,
        "student_return": student_return,
        "random_return": random_return,
        "return_ratio": _ratio(student_return, teacher_return),
        "normalized_return_ratio": _ratio(student_return - random_return, teacher_return - random_return),
        "agreement_quantiles": quantiles,
        "labelled_states": int(probe.agent_count.sum()),
        "teams": teams,
        "teacher_driven_agent_steps_per_s": rate("teacher"),
        "student_driven_agent_steps_per_s": rate("student"),
        "teacher_us_per_decision": us_per_decision("teacher"),
        "student_us_per_decision": us_per_decision("student"),
    }
    return {"evaluation": evaluation, "headline": headline}
