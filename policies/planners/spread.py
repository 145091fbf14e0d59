"""The privileged planner of spread_v0.

World rules the model follows (``sim/worlds/spread.py``): after every move, an agent
alone on a target cell earns +1, an agent sharing its cell with any other agent pays
``collision_penalty``, and every agent earns ``coverage_weight`` times the fraction of
targets covered. An agent alone on a target adds ``1 / num_targets`` to that fraction,
so the model pays it ``1 + coverage_weight / num_targets`` there.

Global step, shared by the batch:

- Assignment. Agents are matched to targets one to one, nearest pairs first
  (``greedy_assign``), so each target has one agent heading for it. Agents left over
  when there are more agents than targets have no goal.
- Prediction. Every agent walks one greedy step per turn toward its target and stays
  there; agents without a goal stay. Counting the predicted agents per cell gives the
  crowding at each step of the horizon.

Per-agent search: every sequence of D moves is scored by the rewards above against the
predicted positions of the others. The terminal value is that of standing on the
assigned target from the moment it is reached,
``discount ** distance * (1 + coverage_weight / num_targets) / (1 - discount)``, and 0
for agents without a goal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.planners.base import LookaheadPlanner, SearchKnobs, greedy_assign, step_toward
from sim.worlds.spread import SpreadWorld


@dataclasses.dataclass(frozen=True)
class _SpreadPlan:
    positions: np.ndarray  # (N, 2)
    goal_cells: np.ndarray  # (N, 2) assigned target cell, or the agent's own cell
    has_goal: np.ndarray  # (N,) bool
    predicted_cells: np.ndarray  # (D, N) flat cell of each agent after steps 1..D
    crowding: np.ndarray  # (D * H * W,) predicted agents per cell after steps 1..D
    on_target: np.ndarray  # (H * W,) bool, target cells
    target_reward: float  # reward of standing alone on a target


class SpreadPlanner(LookaheadPlanner):
    """Plans for spread_v0 agents from every agent's position and every target's position."""

    default_depth = 6
    default_temperature = 0.5
    state_keys = ("positions", "alive", "target_positions")
    candidates_per_step = 8

    def __init__(self, world: SpreadWorld, knobs: SearchKnobs) -> None:
        self.collision_penalty = world.collision_penalty
        self.coverage_weight = world.coverage_weight
        super().__init__(world, knobs)

    def rules(self) -> dict[str, Any]:
        return {
            "map_size": self.map_size,
            "collision_penalty": self.collision_penalty,
            "coverage_weight": self.coverage_weight,
        }

    def _read_state(self, state: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        arrays = super()._read_state(state)
        arrays["target_positions"] = arrays["target_positions"].astype(np.int64, copy=False)
        return arrays

    # Global step.

    def _plan(self, state: Mapping[str, np.ndarray]) -> _SpreadPlan:
        positions, alive, targets = state["positions"], state["alive"], state["target_positions"]
        cells_per_map = self.map_size * self.map_size

        # Assign agents to targets one to one.
        goal_cells = positions.copy()
        has_goal = np.zeros(positions.shape[0], dtype=bool)
        agents = np.flatnonzero(alive)
        if agents.size and targets.size:
            chosen = greedy_assign(
                positions[agents], targets, np.ones(targets.shape[0]), neighbours=self.knobs.neighbours
            )
            assigned = agents[chosen >= 0]
            goal_cells[assigned] = targets[chosen[chosen >= 0]]
            has_goal[assigned] = True

        # Predict: every agent walks to its target and stays; count agents per cell.
        predicted_cells = np.empty((self.depth, positions.shape[0]), dtype=np.int64)  # (D, N)
        crowding = np.empty((self.depth, cells_per_map), dtype=np.int64)  # (D, H * W)
        current = positions
        for t in range(self.depth):
            current = step_toward(current, goal_cells)
            predicted_cells[t] = current[:, 0] * self.map_size + current[:, 1]
            crowding[t] = np.bincount(predicted_cells[t][alive], minlength=cells_per_map)

        on_target = np.zeros(cells_per_map, dtype=bool)
        on_target[targets[:, 0] * self.map_size + targets[:, 1]] = True
        target_reward = 1.0 + self.coverage_weight / max(targets.shape[0], 1)
        return _SpreadPlan(
            positions, goal_cells, has_goal, predicted_cells, crowding.ravel(), on_target, target_reward
        )

    # Per-agent search.

    def _search(self, plan: _SpreadPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = plan.positions[rows]  # (C, 2)
        cells = self.sequence_positions(start)  # (C, S, D, 2)
        flat = cells[..., 0] * self.map_size + cells[..., 1]  # (C, S, D)

        # Others on the same cell at each step: the predicted count without this agent.
        cells_per_map = self.map_size * self.map_size
        crowd = plan.crowding[flat + np.arange(self.depth) * cells_per_map]  # (C, S, D)
        own = plan.predicted_cells[:, rows].T  # (C, D)
        others = crowd - (own[:, None] == flat)
        reward = np.where(others == 0, plan.on_target[flat] * plan.target_reward, -self.collision_penalty)
        returns = reward @ self.step_discounts  # (C, S)

        # Terminal value: standing on the assigned target from the step it is reached.
        has_goal = plan.has_goal[rows]
        distance = np.abs(plan.goal_cells[rows][:, None] - cells[:, :, -1]).sum(axis=-1)  # (C, S)
        terminal = self.discount**distance * plan.target_reward / (1.0 - self.discount)
        terminal = np.where(has_goal[:, None], terminal, 0.0)
        q_values = self.q_from_returns(returns + self.terminal_discount * terminal)
        return q_values, plan.goal_cells[rows]
