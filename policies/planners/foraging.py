"""The privileged planner of foraging_v0.

World rules the model follows (``sim/worlds/foraging.py``): after every move, a food item
of level L is collected when at least L agents stand within one cell of it (Chebyshev
distance 1). Its level is split evenly among all of those agents, and the item
reappears at an unknown random cell.

Global step, shared by the batch:

- Assignment. Agents are matched to food, nearest pairs first, with capacity L per item
  (``greedy_assign``), so agents spread over the food and heavy food gets exactly as
  many helpers as it needs. Items left with some but too few helpers are closed and
  their agents matched again. Agents left over once every item is full are matched as
  one extra helper per item, and any still left head for their nearest item.
- Prediction. Every agent walks one greedy step per turn toward its food and stops
  within one cell of it, which gives the helpers around each item at each step.

Per-agent search: every sequence of D moves is scored by the food it collects among the
agent's K candidate items, its assigned item and the K - 1 nearest others. An item is
collected at the first step where the predicted others plus this agent reach its level,
and is gone afterwards. The terminal value is the best, over the candidates still on the
map, of ``discount ** wait * share``: ``wait`` is the larger of the agent's own steps to
reach the item and the time the L - 1 helpers it needs take to arrive, and ``share`` is
L over the agents that would share it (the assigned agents, plus this one for an item
it was not assigned to). With every candidate gone, the terminal value is that of a
fresh item at the median distance between agents and their food.

NOTE: ``shared_reward`` is not modelled: the planner maximises each agent's own share,
which also maximises the team's food collected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.planners.base import (
    LookaheadPlanner,
    SearchKnobs,
    chebyshev,
    greedy_assign,
    median_or,
    nearest_indices,
    neighbourhood_counts,
    step_toward,
    steps_to_reach,
)
from policies.teacher import LabelInputError
from sim.worlds.foraging import COLLECT_RADIUS, ForagingWorld

CANDIDATES = 4
"""K: food items scored per agent, the assigned one and the three nearest others."""

ASSIGNMENT_PASSES = 3
"""Rounds of matching that close items with too few helpers and re-match their agents."""


@dataclasses.dataclass(frozen=True)
class _ForagingPlan:
    positions: np.ndarray  # (N, 2)
    food_positions: np.ndarray  # (F, 2)
    food_levels: np.ndarray  # (F,)
    goal: np.ndarray  # (N,) food index of each agent, -1 for none
    predicted: np.ndarray  # (D + 1, N, 2) positions under the prediction model
    helpers: np.ndarray  # (D + 1, F) predicted agents within reach of each item
    partner_wait: np.ndarray  # (N,) steps after the horizon until each agent's helpers arrive
    share: np.ndarray  # (N,) fraction of its item's level each agent expects
    join_wait: np.ndarray  # (F,) steps after the horizon until an item's helpers arrive, for a newcomer
    join_share: np.ndarray  # (F,) fraction of an item's level a newcomer expects
    next_value: float  # terminal value once every candidate item is gone


class ForagingPlanner(LookaheadPlanner):
    """Plans for foraging_v0 agents from the positions of every agent and food item."""

    default_depth = 5
    default_temperature = 0.03
    state_keys = ("positions", "alive", "food_positions", "food_levels")
    candidates_per_step = CANDIDATES

    def __init__(self, world: ForagingWorld, knobs: SearchKnobs) -> None:
        self.max_food_level = world.max_food_level
        self.shared_reward = world.shared_reward
        super().__init__(world, knobs)

    def rules(self) -> dict[str, Any]:
        return {"map_size": self.map_size, "collect_radius": COLLECT_RADIUS}

    def _read_state(self, state: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        arrays = super()._read_state(state)
        levels = arrays["food_levels"]
        num_food = arrays["food_positions"].shape[0]
        if levels.shape != (num_food,) or not np.issubdtype(levels.dtype, np.integer):
            raise LabelInputError(
                f"{self.teacher_id}: state['food_levels'] must be an integer array of shape ({num_food},), "
                f"one level per food item, got {levels.dtype} {levels.shape}"
            )
        if num_food and levels.min() < 1:
            raise LabelInputError(
                f"{self.teacher_id}: state['food_levels'] must be >= 1, got {int(levels.min())}"
            )
        arrays["food_positions"] = arrays["food_positions"].astype(np.int64, copy=False)
        arrays["food_levels"] = levels.astype(np.int64, copy=False)
        return arrays

    # Global step.

    def _plan(self, state: Mapping[str, np.ndarray]) -> _ForagingPlan:
        positions, alive = state["positions"], state["alive"]
        food_positions, food_levels = state["food_positions"], state["food_levels"]
        goal = self._assign(positions, alive, food_positions, food_levels)

        # Predict: every agent walks toward its food and waits within reach of it.
        predicted = np.empty((self.depth + 1, *positions.shape), dtype=np.int64)  # (D + 1, N, 2)
        predicted[0] = positions
        walking = alive & (goal >= 0)
        goal_cells = food_positions[np.maximum(goal, 0)] if food_positions.size else positions
        for t in range(1, self.depth + 1):
            previous = predicted[t - 1]
            moving = walking & (steps_to_reach(goal_cells - previous, COLLECT_RADIUS) > 0)
            predicted[t] = np.where(moving[:, None], step_toward(previous, goal_cells), previous)
        helpers = np.stack([
            neighbourhood_counts(predicted[t][alive], food_positions, radius=COLLECT_RADIUS, map_size=self.map_size)
            for t in range(self.depth + 1)
        ])  # (D + 1, F)

        # Terminal-value terms: when the helpers arrive, and how the level is shared.
        eta_at_horizon = steps_to_reach(goal_cells - predicted[-1], COLLECT_RADIUS)  # (N,)
        partner_wait, join_wait, assigned = self._helper_waits(
            np.where(walking, goal, -1), eta_at_horizon, food_levels, unknown_wait=float(self.map_size)
        )
        level = food_levels[np.maximum(goal, 0)] if food_levels.size else np.ones_like(goal)
        share = level / np.maximum(level, assigned[np.maximum(goal, 0)] if food_levels.size else 1)
        join_share = food_levels / np.maximum(food_levels, assigned + 1)
        eta_now = steps_to_reach(goal_cells - positions, COLLECT_RADIUS)[walking]
        next_value = self.discount ** median_or(eta_now, default=float(self.map_size))
        return _ForagingPlan(
            positions=positions,
            food_positions=food_positions,
            food_levels=food_levels,
            goal=goal,
            predicted=predicted,
            helpers=helpers,
            partner_wait=partner_wait,
            share=share,
            join_wait=join_wait,
            join_share=join_share,
            next_value=next_value,
        )

    def _assign(
        self, positions: np.ndarray, alive: np.ndarray, food_positions: np.ndarray, food_levels: np.ndarray
    ) -> np.ndarray:
        """(N,) food index of each alive agent: matched with capacity, else the nearest item."""
        goal = np.full(positions.shape[0], -1, dtype=np.int64)
        if not food_positions.size:
            return goal
        capacity = food_levels.copy()
        pending = np.flatnonzero(alive)
        for _ in range(ASSIGNMENT_PASSES):
            if not pending.size:
                break
            goal[pending] = greedy_assign(
                positions[pending], food_positions, capacity, neighbours=self.knobs.neighbours
            )
            taken = np.bincount(goal[goal >= 0], minlength=food_levels.size)
            incomplete = (taken > 0) & (taken < food_levels)
            if not incomplete.any():
                break
            # Close items that are short of helpers and match their agents again.
            released = np.flatnonzero((goal >= 0) & incomplete[np.maximum(goal, 0)])
            goal[released] = -1
            capacity = np.where(incomplete, 0, food_levels - taken)
            pending = np.flatnonzero(alive & (goal < 0))

        # Agents left over: one extra helper per item, then the nearest item.
        leftover = np.flatnonzero(alive & (goal < 0))
        if leftover.size:
            extra = np.ones(food_levels.size, dtype=np.int64)
            goal[leftover] = greedy_assign(positions[leftover], food_positions, extra, neighbours=self.knobs.neighbours)
        leftover = np.flatnonzero(alive & (goal < 0))
        if leftover.size:
            nearest, _ = nearest_indices(food_positions, positions[leftover], 1)
            goal[leftover] = nearest[:, 0]
        return goal

    @staticmethod
    def _helper_waits(
        goal: np.ndarray, eta: np.ndarray, food_levels: np.ndarray, *, unknown_wait: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps until the L - 1 helpers an agent needs reach an item, from their ``eta``.

        Returns (N,) the wait of each agent for its own item (its own entry skipped),
        (F,) the wait of a newcomer to each item, and (F,) the agents assigned to each
        item. A wait is 0 for level-1 items and ``unknown_wait`` when too few agents
        are assigned.
        """
        num_food = food_levels.size
        wait = np.zeros(goal.shape[0])
        join_wait = np.where(food_levels > 1, unknown_wait, 0.0)
        rows = np.flatnonzero(goal >= 0)
        assigned = np.bincount(goal[rows], minlength=num_food)
        if not rows.size:
            return wait, join_wait, assigned

        # Sort the assigned agents by item, then by eta, and rank them within each item.
        order = rows[np.lexsort((eta[rows], goal[rows]))]
        sorted_goal, sorted_eta = goal[order], eta[order]
        group_start = np.flatnonzero(np.r_[True, sorted_goal[1:] != sorted_goal[:-1]])
        sizes = np.diff(np.r_[group_start, order.size])
        starts = np.repeat(group_start, sizes)
        rank = np.arange(order.size) - starts
        size = np.repeat(sizes, sizes)
        needed = food_levels[sorted_goal] - 1

        # An agent's own wait is the needed-th smallest eta of the others, skipping its own entry.
        index = needed - 1 + (rank <= needed - 1)
        partner = sorted_eta[np.clip(starts + index, 0, order.size - 1)]
        enough = size - 1 >= needed
        wait[order] = np.where(needed == 0, 0.0, np.where(enough, partner, unknown_wait))

        # A newcomer waits for the needed-th smallest eta of all the assigned agents.
        items = sorted_goal[group_start]
        item_needed = food_levels[items] - 1
        newcomer = sorted_eta[np.clip(group_start + item_needed - 1, 0, order.size - 1)]
        join_wait[items] = np.where(
            item_needed == 0, 0.0, np.where(sizes >= item_needed, newcomer, unknown_wait)
        )
        return wait, join_wait, assigned

    # Per-agent search.

    def _search(self, plan: _ForagingPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = plan.positions[rows]  # (C, 2)
        goal = plan.goal[rows]  # (C,)
        if not plan.food_positions.size:
            return np.zeros((rows.size, self.num_actions)), start

        # Candidates: column 0 is the assigned item, then the nearest others.
        nearest, nearest_valid = nearest_indices(plan.food_positions, start, CANDIDATES - 1)
        candidates = np.concatenate([np.maximum(goal, 0)[:, None], nearest], axis=1)  # (C, K)
        valid = np.concatenate([(goal >= 0)[:, None], nearest_valid & (nearest != goal[:, None])], axis=1)
        food = plan.food_positions[candidates]  # (C, K, 2)
        level = plan.food_levels[candidates]  # (C, K)

        # Helpers other than this agent, from the prediction.
        own = plan.predicted[1:, rows]  # (D, C, 2)
        own_near = chebyshev(own[:, :, None, :] - food[None]) <= COLLECT_RADIUS  # (D, C, K)
        others = plan.helpers[1:][:, candidates] - own_near  # (D, C, K)
        others = others.transpose(1, 0, 2)  # (C, D, K)

        # Score every sequence: collections along the way, then the terminal value.
        cells = self.sequence_positions(start)  # (C, S, D, 2)
        near = chebyshev(cells[:, :, :, None, :] - food[:, None, None]) <= COLLECT_RADIUS  # (C, S, D, K)
        helpers = others[:, None] + near  # (C, S, D, K)
        collected = (helpers >= level[:, None, None]) & valid[:, None, None]
        first = collected & (np.cumsum(collected, axis=2) == 1)
        payout = np.where(first & near, level[:, None, None] / np.maximum(helpers, 1), 0.0)
        returns = payout.sum(axis=3) @ self.step_discounts  # (C, S)

        # Terminal value: the best candidate still on the map, else a fresh item.
        gone = first.any(axis=2) | ~valid[:, None]  # (C, S, K)
        eta = steps_to_reach(food[:, None] - cells[:, :, -1, None], COLLECT_RADIUS)  # (C, S, K)
        helper_wait = np.concatenate([plan.partner_wait[rows][:, None], plan.join_wait[candidates[:, 1:]]], axis=1)
        share = np.concatenate([plan.share[rows][:, None], plan.join_share[candidates[:, 1:]]], axis=1)  # (C, K)
        candidate_value = self.discount ** np.maximum(eta, helper_wait[:, None]) * share[:, None]
        candidate_value = np.where(gone, -np.inf, candidate_value).max(axis=2)  # (C, S)
        terminal = np.where(np.isfinite(candidate_value), candidate_value, plan.next_value)
        q_values = self.q_from_returns(returns + self.terminal_discount * terminal)
        return q_values, np.where((goal >= 0)[:, None], food[:, 0], start)
