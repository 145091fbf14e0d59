"""The privileged planner of predator_prey_v0, for both teams.

World rules the model follows (``sim/worlds/predator_prey.py``): all agents move at
once. Afterwards, a prey is captured when at least ``capture_predators`` predators stand
within ``capture_radius`` cells of it (Chebyshev distance). The capture pays +1 split
evenly among those predators and -1 to the prey, which dies; every prey alive after a
step earns ``survival_reward``. Respawned prey appear at unknown random cells, so the
model ignores them.

Global step, shared by the batch:

- Assignment. Predators are matched to prey, nearest pairs first, with capacity
  ``capture_predators`` per prey (``greedy_assign``), so predators spread over the prey
  instead of all chasing the nearest one. Predators left over chase their nearest prey.
- Prediction. A prey flees from its nearest predator by the move that ends farthest
  from it, but only once that predator is within the world's ``view_radius``
  (Chebyshev), where any policy that reads observations can see it; farther away it is
  modelled as standing still. Predators take one greedy step per turn toward their prey.

Per-agent search:

- A predator scores each sequence of D moves against K candidate prey (its assigned
  prey and the nearest others) and the M other predators nearest to each candidate,
  which follow the prediction. A candidate is captured at the first step where enough
  of them stand within the capture radius, paying this predator its share. The score
  averages two scenarios for the candidates (``FLEE_WEIGHT``): they flee, under the rule
  above, from the nearest of this predator and those others, or they stand still. The
  terminal value is ``discount ** steps / capture_predators`` for the steps still
  needed to reach the assigned prey, or the value of a fresh chase once it is caught.
- A prey scores each sequence against its M nearest predators, wherever they are, which
  chase the prey's own sequence greedily (the worst case). It earns
  ``survival_reward`` per step and -1 at capture, after which the sequence earns
  nothing. A surviving sequence ends with
  ``survival_reward * (1 - threat) / (1 - discount) - threat``, where ``threat`` is the
  discounted chance of capture (``_capture_threat``): it grows as hunters come near and
  as the wall ahead of the prey's flight comes near, so prey keep away from walls and
  corners. The goal of a prey is the cell where its best sequence ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from policies.planners.base import (
    LookaheadPlanner,
    SearchKnobs,
    chebyshev,
    flee_step,
    greedy_assign,
    median_or,
    nearest_indices,
    step_toward,
    steps_to_reach,
)
from policies.teacher import LabelInputError
from sim.worlds.predator_prey import PREDATOR, PredatorPreyWorld

CANDIDATES = 3
"""K: prey scored per predator, the assigned one and the two nearest others."""

THREATS = 4
"""M: predators modelled around each candidate prey, and around each planning prey."""

FLEE_WEIGHT = 0.75
"""Weight of the scenario where candidate prey flee. The rest goes to prey that stand still.

Against prey that flee perfectly, a lone predator never closes the gap in open ground,
so every chase would tie. Against prey that never flee, the model would not see
cornering. Averaging the two scenarios keeps both signals. Of 0.25, 0.5, 0.75 and 0.9,
0.75 gave the most captures at depth 2 on a 32-agent world against both heuristic and
planner prey (4 episodes each, so an estimate)."""

FAR = 10**6
"""Distance given to missing threats, so they never count as near."""


@dataclasses.dataclass(frozen=True)
class _PredatorPreyPlan:
    positions: np.ndarray  # (N, 2)
    is_predator: np.ndarray  # (N,) bool
    predators: np.ndarray  # (P,) alive predator rows
    prey: np.ndarray  # (Y,) alive prey rows
    target: np.ndarray  # (N,) prey row each predator chases, -1 for none
    predicted: np.ndarray  # (D + 1, N, 2) positions under the prediction model
    next_value: float  # a predator's terminal value once its prey is caught


class PredatorPreyPlanner(LookaheadPlanner):
    """Plans for predators and prey of predator_prey_v0 from every agent's position and team."""

    default_depth = 4
    default_temperature = 0.03
    state_keys = ("positions", "alive", "team_ids")
    candidates_per_step = CANDIDATES * (THREATS + 1) * 4

    def __init__(self, world: PredatorPreyWorld, knobs: SearchKnobs) -> None:
        self.capture_radius = world.capture_radius
        self.capture_predators = world.capture_predators
        self.survival_reward = world.survival_reward
        self.view_radius = world.view_radius
        super().__init__(world, knobs)

    def rules(self) -> dict[str, Any]:
        return {
            "map_size": self.map_size,
            "capture_radius": self.capture_radius,
            "capture_predators": self.capture_predators,
            "survival_reward": self.survival_reward,
            "view_radius": self.view_radius,
        }

    def _read_state(self, state: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        arrays = super()._read_state(state)
        team_ids = arrays["team_ids"]
        num_agents = arrays["positions"].shape[0]
        if team_ids.shape != (num_agents,) or not np.issubdtype(team_ids.dtype, np.integer):
            raise LabelInputError(
                f"{self.teacher_id}: state['team_ids'] must be an integer array of shape ({num_agents},), "
                f"got {team_ids.dtype} {team_ids.shape}"
            )
        unknown = (team_ids < 0) | (team_ids > 1)
        if unknown.any():
            raise LabelInputError(
                f"{self.teacher_id}: state['team_ids'] must be 0 (predator) or 1 (prey), "
                f"got {int(team_ids[unknown][0])}"
            )
        return arrays

    # Global step.

    def _plan(self, state: Mapping[str, np.ndarray]) -> _PredatorPreyPlan:
        positions, alive = state["positions"], state["alive"]
        is_predator = state["team_ids"] == PREDATOR
        predators = np.flatnonzero(alive & is_predator)
        prey = np.flatnonzero(alive & ~is_predator)

        # Assign predators to prey with capacity, leftovers to their nearest prey.
        target = np.full(positions.shape[0], -1, dtype=np.int64)
        if predators.size and prey.size:
            capacity = np.full(prey.size, self.capture_predators)
            chosen = greedy_assign(positions[predators], positions[prey], capacity, neighbours=self.knobs.neighbours)
            leftover = chosen < 0
            if leftover.any():
                nearest, _ = nearest_indices(positions[prey], positions[predators[leftover]], 1)
                chosen[leftover] = nearest[:, 0]
            target[predators] = prey[chosen]

        predicted = self._predict(positions, predators, prey, target)
        chasing = predators[target[predators] >= 0]
        steps = steps_to_reach(positions[target[chasing]] - positions[chasing], self.capture_radius)
        next_value = self.discount ** median_or(steps, default=float(self.map_size)) / self.capture_predators
        return _PredatorPreyPlan(positions, is_predator, predators, prey, target, predicted, next_value)

    def _predict(
        self, positions: np.ndarray, predators: np.ndarray, prey: np.ndarray, target: np.ndarray
    ) -> np.ndarray:
        """(D + 1, N, 2) positions: prey flee their nearest predator, predators chase their prey."""
        predicted = np.empty((self.depth + 1, *positions.shape), dtype=np.int64)
        predicted[0] = positions
        for t in range(1, self.depth + 1):
            previous = predicted[t - 1]
            current = previous.copy()
            if predators.size and prey.size:
                _, nearest = cKDTree(previous[predators]).query(previous[prey], k=1, p=1)
                current[prey] = self._flee(previous[prey], previous[predators[nearest]])
                chasing = predators[target[predators] >= 0]
                current[chasing] = step_toward(previous[chasing], previous[target[chasing]])
            predicted[t] = current
        return predicted

    def _flee(self, prey_cells: np.ndarray, threat: np.ndarray) -> np.ndarray:
        """Prey cells after one modelled move: away from ``threat`` once it is in view, else stay."""
        in_view = chebyshev(threat - prey_cells) <= self.view_radius
        return np.where(in_view[..., None], flee_step(prey_cells, threat, self.map_size), prey_cells)

    # Per-agent search.

    def _search(self, plan: _PredatorPreyPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q_values = np.zeros((rows.size, self.num_actions))  # (C, A)
        goals = plan.positions[rows].copy()  # (C, 2)
        hunters = plan.is_predator[rows]
        if hunters.any():
            q_values[hunters], goals[hunters] = self._search_predators(plan, rows[hunters])
        if (~hunters).any():
            q_values[~hunters], goals[~hunters] = self._search_prey(plan, rows[~hunters])
        return q_values, goals

    def _search_predators(self, plan: _PredatorPreyPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = plan.positions[rows]  # (C, 2)
        goal = plan.target[rows]  # (C,)
        if not plan.prey.size:
            return np.zeros((rows.size, self.num_actions)), start

        # Candidates: column 0 is the assigned prey, then the nearest others.
        nearest, nearest_valid = nearest_indices(plan.positions[plan.prey], start, CANDIDATES - 1)
        nearest = plan.prey[nearest]
        candidates = np.concatenate([np.maximum(goal, 0)[:, None], nearest], axis=1)  # (C, K)
        valid = np.concatenate([(goal >= 0)[:, None], nearest_valid & (nearest != goal[:, None])], axis=1)

        # The other predators nearest to each candidate; this predator is masked out.
        others, others_valid = nearest_indices(
            plan.positions[plan.predators], plan.positions[candidates.ravel()], THREATS + 1
        )
        others = plan.predators[others].reshape(*candidates.shape, THREATS + 1)  # (C, K, M)
        others_valid = others_valid.reshape(others.shape) & (others != rows[:, None, None])
        others_path = plan.predicted[:, others].transpose(1, 2, 3, 0, 4)  # (C, K, M, D + 1, 2)

        cells = self.sequence_positions(start)  # (C, S, D, 2)
        totals = 0.0
        for flee, weight in ((True, FLEE_WEIGHT), (False, 1.0 - FLEE_WEIGHT)):
            if weight == 0.0:
                continue
            returns, caught, prey_cells = self._simulate_chase(
                start, cells, plan.positions[candidates], valid, others_path, others_valid, flee=flee
            )
            steps = steps_to_reach(prey_cells[:, :, 0] - cells[:, :, -1], self.capture_radius)  # (C, S)
            terminal = np.where(caught[:, :, 0], plan.next_value, self.discount**steps / self.capture_predators)
            terminal = np.where((goal >= 0)[:, None], terminal, 0.0)
            totals = totals + weight * (returns + self.terminal_discount * terminal)
        q_values = self.q_from_returns(totals)
        return q_values, np.where((goal >= 0)[:, None], plan.positions[np.maximum(goal, 0)], start)

    def _simulate_chase(
        self,
        start: np.ndarray,
        cells: np.ndarray,
        prey_start: np.ndarray,
        valid: np.ndarray,
        others_path: np.ndarray,
        others_valid: np.ndarray,
        *,
        flee: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Play every sequence of C predators against their K candidate prey.

        Returns (C, S) discounted capture credit, (C, S, K) which candidates were caught
        and (C, S, K, 2) the candidates' final cells.
        """
        num_sequences = cells.shape[1]
        prey_cells = np.repeat(prey_start[:, None], num_sequences, axis=1)  # (C, S, K, 2)
        free = np.repeat(valid[:, None], num_sequences, axis=1)  # (C, S, K)
        caught = np.zeros_like(free)
        returns = np.zeros(cells.shape[:2])  # (C, S)
        for t in range(self.depth):
            # Each candidate flees the nearest predator of the previous step.
            own_before = start[:, None] if t == 0 else cells[:, :, t - 1]  # (C, S or 1, 2)
            own_distance = np.abs(prey_cells - own_before[:, :, None]).sum(axis=-1)  # (C, S, K)
            others_before = others_path[:, None, :, :, t]  # (C, 1, K, M, 2)
            others_distance = np.abs(prey_cells[:, :, :, None] - others_before).sum(axis=-1)  # (C, S, K, M)
            others_distance = np.where(others_valid[:, None], others_distance, FAR)
            closest = others_distance.argmin(axis=-1)[..., None, None]  # (C, S, K, 1, 1)
            other_threat = np.take_along_axis(others_before, closest, axis=3)[:, :, :, 0]  # (C, S, K, 2)
            own_is_closer = (own_distance <= others_distance.min(axis=-1))[..., None]
            threat = np.where(own_is_closer, own_before[:, :, None], other_threat)
            if flee:
                prey_cells = np.where(free[..., None], self._flee(prey_cells, threat), prey_cells)

            # Capture check after everyone moved.
            own_near = chebyshev(prey_cells - cells[:, :, t, None]) <= self.capture_radius  # (C, S, K)
            others_now = others_path[:, None, :, :, t + 1]  # (C, 1, K, M, 2)
            others_near = (chebyshev(prey_cells[:, :, :, None] - others_now) <= self.capture_radius) & others_valid[
                :, None
            ]
            count = own_near + others_near.sum(axis=-1)  # (C, S, K)
            captured = free & (count >= self.capture_predators)
            credit = np.where(captured & own_near, 1.0 / np.maximum(count, 1), 0.0).sum(axis=-1)
            returns += self.step_discounts[t] * credit
            caught |= captured
            free &= ~captured

        return returns, caught, prey_cells

    def _search_prey(self, plan: _PredatorPreyPlan, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = plan.positions[rows]  # (C, 2)
        threats, threats_valid = nearest_indices(plan.positions[plan.predators], start, THREATS)
        hunters = plan.positions[plan.predators[threats]] if plan.predators.size else np.zeros((*threats.shape, 2))
        cells = self.sequence_positions(start)  # (C, S, D, 2)

        # Play every sequence against the M nearest predators chasing it greedily.
        num_sequences = cells.shape[1]
        hunters = np.repeat(hunters[:, None].astype(np.int64), num_sequences, axis=1)  # (C, S, M, 2)
        alive = np.ones(cells.shape[:2], dtype=bool)  # (C, S)
        returns = np.zeros(cells.shape[:2])
        for t in range(self.depth):
            prey_before = start[:, None] if t == 0 else cells[:, :, t - 1]
            hunters = step_toward(hunters, np.broadcast_to(prey_before[:, :, None], hunters.shape))
            near = (chebyshev(hunters - cells[:, :, t, None]) <= self.capture_radius) & threats_valid[:, None]
            captured = alive & (near.sum(axis=-1) >= self.capture_predators)
            reward = np.where(captured, -1.0, np.where(alive, self.survival_reward, 0.0))
            returns += self.step_discounts[t] * reward
            alive &= ~captured

        # Terminal value of surviving sequences from the threat of the hunters' final cells.
        threat = self._capture_threat(hunters, cells[:, :, -1], threats_valid)  # (C, S)
        survival = self.survival_reward * (1.0 - threat) / (1.0 - self.discount) - threat
        totals = returns + self.terminal_discount * np.where(alive, survival, 0.0)  # (C, S)

        best = totals.argmax(axis=1)
        goals = cells[np.arange(rows.size), best, -1]
        return self.q_from_returns(totals), goals

    def _capture_threat(self, hunters: np.ndarray, prey_cells: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(C, S) discounted chance of capture from (C, S, M, 2) hunter cells and (C, S, 2) prey cells.

        One needed hunter combines the M hunters' ``capture_time`` as independent
        chances, ``1 - prod(1 - discount ** time)``; several needed hunters use the time
        of the ``capture_predators``-th fastest.
        """
        time = self.capture_time(hunters, prey_cells[:, :, None])
        time = np.where(valid[:, None], time, FAR)  # (C, S, M)
        if self.capture_predators == 1:
            return 1.0 - np.prod(1.0 - self.discount ** time.astype(np.float64), axis=-1)
        if self.capture_predators > time.shape[-1]:
            return np.zeros(time.shape[:2])
        needed = np.partition(time, self.capture_predators - 1, axis=-1)[..., self.capture_predators - 1]
        return self.discount ** needed.astype(np.float64)

    def capture_time(self, hunter: np.ndarray, prey: np.ndarray) -> np.ndarray:
        """Estimate the steps a hunter needs to catch a prey that runs straight away, from (..., 2) cells.

        The prey runs along the axis on which it is farther from the hunter until the wall
        stops it. The hunter is as fast as the prey, so it closes the gap only then. The
        estimate is the gap (``steps_to_reach``) plus the prey's room before that wall.
        """
        away = prey - hunter  # (..., 2)
        last = self.map_size - 1
        room_both_ways = np.maximum(prey, last - prey)
        room = np.where(away > 0, last - prey, np.where(away < 0, prey, room_both_ways))
        farther_vertically = np.abs(away[..., 0]) >= np.abs(away[..., 1])
        run = np.where(farther_vertically, room[..., 0], room[..., 1])
        return steps_to_reach(away, self.capture_radius) + run
