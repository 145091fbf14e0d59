"""Distillation rollout workers: students act, a query strategy picks states, teachers label them.

A ``Collector`` keeps a shard of world copies and a local copy of the student. Every
step it runs the student on the alive agents in one batch, lets the query strategy pick which
states to label under the label budget, sends those states (with the agents' rows and
the privileged ``World.state()`` of that step) to the teacher in one request per world,
and steps the world. DAgger's beta is the chance that an agent whose state was labelled
executes the teacher's action instead of the student's; unlabelled agents always act as
the student does, because the teacher's action for them is unknown. In ``offline`` mode
the teacher labels and drives every agent, and a budget-sized random share of those
states is kept.

Shape letters: N agents in a world, B labelled states of one world step, R labelled
states of one ``collect`` call, A actions, O the observation shape.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from distill.query import select_states
from policies.networks import NetworkConfig, build_network
from policies.student import Student
from policies.teacher import LabelRequest, Labels
from sim.rollout import ShardSpec
from sim.world import World

logger = logging.getLogger(__name__)


class Labeler(Protocol):
    """Anything that labels requests: the label service's handle or a local teacher."""

    def label(self, requests: Sequence[LabelRequest], *, request_ids: Sequence[str] | None = None) -> list[Labels]:
        ...


class LocalLabeler:
    """Labels requests with a teacher in this process, for the serial backend."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher

    def label(self, requests: Sequence[LabelRequest], *, request_ids: Sequence[str] | None = None) -> list[Labels]:
        return self.teacher.label_many(list(requests))


@dataclasses.dataclass
class CollectResult:
    """The labelled states and counters of one ``Collector.collect`` call."""

    obs: np.ndarray
    """(R, *O) float32."""
    agent_ids: np.ndarray
    """(R,) int64 agent index in the population."""
    world_steps: np.ndarray
    """(R,) int64 episode step of each state."""
    probs: np.ndarray
    """(R, A) float32 teacher probabilities."""
    student_probs: np.ndarray
    """(R, A) float32 probabilities of the student that acted (before this iteration's update)."""
    aux: dict[str, np.ndarray]
    """Teacher auxiliary targets, each (R, ...)."""
    action_mask: np.ndarray | None
    """(R, A) bool, or ``None`` when the world has no action mask."""
    teacher_ids: list[str]
    teacher_versions: list[str]
    agent_steps: int
    """Actions taken by alive agents."""
    visited_states: int
    """Alive-agent states offered to the query strategy."""
    labels_requested: int
    """States sent to the teacher (in offline mode, every visited state)."""
    episodes: int
    episode_return_sum: float
    rollout_s: float
    """Seconds stepping worlds and running the student."""
    label_s: float
    """Seconds waiting for labels."""


class Collector:
    """Steps a shard of world copies with the student and collects teacher labels.

    Args:
        shard: the world copies this worker holds.
        world_offsets: population index of each world's first agent row.
        student_config: the student network's architecture.
        labeler: the label service handle, or a ``LocalLabeler``.
        strategy: query strategy name (see ``distill.query``).
        seed: seeds the worker's query, DAgger and tie-breaking draws.
        worker_index: position of this worker, used in request ids.
        torch_threads: threads torch may use in this process.
    """

    def __init__(
        self,
        shard: ShardSpec,
        *,
        world_offsets: Sequence[int],
        student_config: NetworkConfig | Mapping[str, Any],
        labeler: Labeler,
        strategy: str,
        seed: int,
        worker_index: int = 0,
        torch_threads: int = 1,
    ) -> None:
        torch.set_num_threads(torch_threads)
        if isinstance(student_config, Mapping):
            student_config = NetworkConfig.from_dict(student_config)
        self.worlds: list[World] = [spec.build() for spec in shard.worlds]
        self.world_offsets = list(world_offsets)
        self.student = Student(build_network(student_config))
        self.labeler = labeler
        self.strategy = strategy
        self.worker_index = worker_index
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, worker_index]))
        self._returns = [np.zeros(world.num_agents) for world in self.worlds]
        self._obs = [world.reset(seed=spec.seed) for world, spec in zip(self.worlds, shard.worlds)]
        self._calls = 0

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load new student weights, sent once per learner update."""
        self.student.set_weights(weights)

    def collect(self, num_steps: int, *, beta: float, label_fraction: float, iteration: int, mode: str) -> CollectResult:
        """Run ``num_steps`` steps of every world and return the labelled states."""
        self._calls += 1
        batches: list[dict[str, Any]] = []
        counters = {"agent_steps": 0, "visited": 0, "requested": 0, "episodes": 0, "return_sum": 0.0}
        timers = {"rollout": 0.0, "label": 0.0}

        for step in range(num_steps):
            start = time.perf_counter()
            plans = [self._plan(index, label_fraction, mode) for index in range(len(self.worlds))]
            timers["rollout"] += time.perf_counter() - start

            # Label: one request per world with labelled states, sent together.
            start = time.perf_counter()
            labels = self._label(plans, iteration=iteration, step=step)
            timers["label"] += time.perf_counter() - start

            start = time.perf_counter()
            for plan, world_labels in zip(plans, labels):
                batches.append(self._act(plan, world_labels, beta=beta, mode=mode, counters=counters))
            timers["rollout"] += time.perf_counter() - start

        return self._result(batches, counters, timers)

    # One world step, in three parts: plan (student and query), label, act.

    def _plan(self, index: int, label_fraction: float, mode: str) -> dict[str, Any]:
        world = self.worlds[index]
        obs = self._obs[index]
        alive_rows = np.flatnonzero(world.alive)  # (N',)
        mask = world.action_mask()
        alive_mask = None if mask is None else mask[alive_rows]
        student_probs = (
            self.student.probs(obs[alive_rows], alive_mask)
            if alive_rows.size
            else np.zeros((0, world.num_actions), dtype=np.float32)
        )  # (N', A)

        if mode == "offline":
            chosen = np.arange(alive_rows.size)  # the teacher drives everyone
        else:
            chosen = select_states(self.strategy, student_probs, fraction=label_fraction, rng=self._rng)
        rows = alive_rows[chosen]
        request = None
        if rows.size:
            request = LabelRequest(
                obs=np.ascontiguousarray(obs[rows]),
                rows=rows.astype(np.int64),
                state=world.state(),
                action_mask=None if mask is None else mask[rows],
            )
        return {
            "index": index, "world": world, "obs": obs, "alive_rows": alive_rows, "mask": mask,
            "student_probs": student_probs, "chosen": chosen, "rows": rows, "request": request,
            "label_fraction": label_fraction,
        }

    def _label(self, plans: list[dict[str, Any]], *, iteration: int, step: int) -> list[Labels | None]:
        requests, ids, positions = [], [], []
        for position, plan in enumerate(plans):
            if plan["request"] is not None:
                requests.append(plan["request"])
                ids.append(f"w{self.worker_index}-c{self._calls}-i{iteration}-s{step}-world{plan['index']}")
                positions.append(position)
        results: list[Labels | None] = [None] * len(plans)
        if requests:
            for position, labels in zip(positions, self.labeler.label(requests, request_ids=ids)):
                results[position] = labels
        return results

    def _act(
        self, plan: dict[str, Any], labels: Labels | None, *, beta: float, mode: str, counters: dict[str, Any]
    ) -> dict[str, Any]:
        world, index = plan["world"], plan["index"]
        alive_rows, student_probs, rows = plan["alive_rows"], plan["student_probs"], plan["rows"]

        # Actions: the student's argmax, replaced by the teacher's for driven agents.
        actions = np.full(world.num_agents, -1, dtype=np.int64)  # (N,)
        if alive_rows.size:
            actions[alive_rows] = student_probs.argmax(axis=1)
        batch: dict[str, Any] = {}
        if labels is not None:
            teacher_actions = labels.probs.argmax(axis=1)
            if mode == "offline":
                driven = np.ones(rows.size, dtype=bool)
                kept = self._rng.random(rows.size) < plan["label_fraction"]  # the budget-sized share
            else:
                driven = self._rng.random(rows.size) < beta
                kept = np.ones(rows.size, dtype=bool)
            actions[rows[driven]] = teacher_actions[driven]
            mask = plan["request"].action_mask
            batch = {
                "obs": plan["request"].obs[kept],
                "agent_ids": self.world_offsets[index] + rows[kept],
                "world_steps": np.full(int(kept.sum()), world.episode_step, dtype=np.int64),
                "probs": labels.probs[kept],
                "student_probs": student_probs[plan["chosen"]][kept],
                "aux": {name: values[kept] for name, values in labels.aux.items()},
                "action_mask": None if mask is None else mask[kept],
                "teacher_id": labels.teacher_id,
                "teacher_version": labels.teacher_version,
            }

        # Step, count, and reset worlds whose episode ended.
        step = world.step(actions)
        counters["agent_steps"] += int(alive_rows.size)
        counters["visited"] += int(alive_rows.size)
        counters["requested"] += int(rows.size)
        self._returns[index] += step.reward
        self._obs[index] = step.obs
        if world.episode_over:
            counters["episodes"] += 1
            counters["return_sum"] += float(self._returns[index].mean())
            self._returns[index][:] = 0.0
            self._obs[index] = world.reset()
        return batch

    def _result(self, batches: list[dict[str, Any]], counters: dict[str, Any], timers: dict[str, float]) -> CollectResult:
        filled = [batch for batch in batches if batch and len(batch["obs"])]
        world = self.worlds[0]
        if filled:
            obs = np.concatenate([batch["obs"] for batch in filled])
            aux_names = filled[0]["aux"].keys()
            aux = {name: np.concatenate([batch["aux"][name] for batch in filled]) for name in aux_names}
            masks = [batch["action_mask"] for batch in filled]
            action_mask = None if masks[0] is None else np.concatenate(masks)
            sizes = [len(batch["obs"]) for batch in filled]
            teacher_ids = [id_ for batch, size in zip(filled, sizes) for id_ in [batch["teacher_id"]] * size]
            versions = [v for batch, size in zip(filled, sizes) for v in [batch["teacher_version"]] * size]
        else:
            obs = np.zeros((0, *world.observation_shape), dtype=np.float32)
            aux, action_mask, teacher_ids, versions = {}, None, [], []

        def stacked(key: str, empty: np.ndarray) -> np.ndarray:
            return np.concatenate([batch[key] for batch in filled]) if filled else empty

        no_probs = np.zeros((0, world.num_actions), dtype=np.float32)
        return CollectResult(
            obs=obs,
            agent_ids=stacked("agent_ids", np.zeros(0, dtype=np.int64)),
            world_steps=stacked("world_steps", np.zeros(0, dtype=np.int64)),
            probs=stacked("probs", no_probs),
            student_probs=stacked("student_probs", no_probs),
            aux=aux,
            action_mask=action_mask,
            teacher_ids=teacher_ids,
            teacher_versions=versions,
            agent_steps=counters["agent_steps"],
            visited_states=counters["visited"],
            labels_requested=counters["requested"],
            episodes=counters["episodes"],
            episode_return_sum=counters["return_sum"],
            rollout_s=timers["rollout"],
            label_s=timers["label"],
        )
