"""A scripted focus-fire teacher for MAgent2 ``battle_v4``.

Every agent picks a target among the living enemies: the weakest enemy in attack range
if there is one, else the enemy that minimises ``distance + hp_weight * hp``, so nearby
wounded enemies draw fire from several agents at once. An agent with an enemy in range
attacks it; otherwise it moves to the free cell that brings it closest to its target.

Action layout of ``battle_v4`` in magent2 0.3.4 (21 actions), with offsets as ``(dx, dy)``
in the ``(x, y)`` cells that ``GridWorld.get_pos`` returns. Both tables were checked by
stepping the env: every move shifted the agents' positions by its offset, and every
attack lowered the hp of an enemy at its offset.

- 0 .. 12 move to one of the 13 cells within distance 2 (``CircleRange(2)``, the
  ``speed`` of the battle config), in row-major order over ``(dy, dx)``; 6 stays put.
- 13 .. 20 attack one of the 8 neighbouring cells (``CircleRange(1.5)``, the attack
  range), numbered as ``GridWorld.get_view2attack`` lays them out: row-major order over
  ``(dy, dx)`` with the agent's own cell left out.

Shape letters: B states in a request, N agents in the world, A = 21 actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from policies.scripted.common import ScriptedTeacher, check_temperature
from policies.teacher import LabelInputError, LabelRequest

BATTLE_NUM_ACTIONS = 21
"""A of ``battle_v4``: 13 moves (one of them stays put) and 8 attacks."""

BATTLE_MOVE_OFFSETS = np.array(
    [(0, -2), (-1, -1), (0, -1), (1, -1), (-2, 0), (-1, 0), (0, 0), (1, 0), (2, 0), (-1, 1), (0, 1), (1, 1), (0, 2)],
    dtype=np.float32,
)
"""(13, 2) ``(dx, dy)`` of move actions 0 .. 12."""

BATTLE_STAY_ACTION = 6
"""The move action with offset (0, 0)."""

BATTLE_ATTACK_BASE = 13
"""The first attack action; ``GridWorld.get_view2attack`` reports it as ``attack_base``."""

BATTLE_ATTACK_OFFSETS = np.array(
    [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)], dtype=np.float32
)
"""(8, 2) ``(dx, dy)`` of attack actions 13 .. 20."""

# Scores are in cells of distance. A move scores minus the distance left to the target,
# which is at least 1 because the target occupies its cell. An attack on an enemy in range
# scores ATTACK_SCORE plus up to 1 for a wounded enemy, so it beats every move.
ATTACK_SCORE = 1.0
BLOCKED_SCORE = -100.0
"""Score of moves into walls or occupied cells and of attacks on cells without an enemy."""


@dataclasses.dataclass(frozen=True)
class ScriptedBattleSpec:
    """Builds a ``ScriptedBattleTeacher``."""

    temperature: float = 0.25
    """Softmax temperature over action scores, in cells of distance; lower is greedier."""
    hp_weight: float = 3.0
    """Cells of extra distance that a full-hp enemy counts as, against one at zero hp."""

    def __post_init__(self) -> None:
        check_temperature(self.temperature, "ScriptedBattleSpec")
        if isinstance(self.hp_weight, bool) or not isinstance(self.hp_weight, (int, float)) or not (
            np.isfinite(self.hp_weight) and self.hp_weight >= 0
        ):
            raise ValueError(
                f"ScriptedBattleSpec: hp_weight must be a non-negative finite number, got {self.hp_weight!r}"
            )

    def build(self) -> ScriptedBattleTeacher:
        """Construct the teacher."""
        return ScriptedBattleTeacher(self)


class ScriptedBattleTeacher(ScriptedTeacher):
    """Focus fire for MAgent2 ``battle_v4`` from every agent's position and hp.

    Reads ``positions``, ``hp``, ``alive`` and ``team_ids`` from the state, and the wall
    channel ``global[x, y, 0]`` where ``global`` is present. Dead rows, and rows with no
    living enemy, stay put. The auxiliary target ``goal`` is the ``(dx, dy)`` offset from
    the agent to its target, zero without a target.
    """

    teacher_id = "scripted/battle_v4"
    version = "1"
    num_actions = BATTLE_NUM_ACTIONS
    aux_shapes = {"goal": (2,)}
    no_op_action = BATTLE_STAY_ACTION

    def __init__(self, spec: ScriptedBattleSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or ScriptedBattleSpec()
        self.temperature = self.spec.temperature

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        positions = self.state_array(request, "positions").astype(np.float32)  # (N, 2)
        hp = self.state_array(request, "hp").astype(np.float32)  # (N,)
        alive = self.state_array(request, "alive").astype(bool)  # (N,)
        team_ids = self.state_array(request, "team_ids")  # (N,)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise LabelInputError(
                f"{self.teacher_id}: state['positions'] must have shape (N, 2), got {positions.shape}"
            )
        rows = self.rows_of(request, positions.shape[0])
        walls = self._walls(request)

        target = self._targets(rows, positions, hp, alive, team_ids)
        acting = alive[rows] & (target >= 0)  # (B,)
        own = positions[rows]  # (B, 2)
        goal = np.where(acting[:, None], positions[np.maximum(target, 0)] - own, 0.0)  # (B, 2)
        goal = np.nan_to_num(goal)

        scores = np.empty((rows.size, BATTLE_NUM_ACTIONS), dtype=np.float64)  # (B, A)
        scores[:, :BATTLE_ATTACK_BASE] = self._move_scores(own, goal, positions, alive, walls)
        scores[:, BATTLE_ATTACK_BASE:] = self._attack_scores(own, rows, positions, hp, alive, team_ids)
        scores = np.nan_to_num(scores, nan=BLOCKED_SCORE)
        probs = self.scores_to_probs(scores, request, acting=acting)
        return probs, {"goal": goal.astype(np.float32)}

    def _walls(self, request: LabelRequest) -> np.ndarray | None:
        """Return the (W, H) bool wall map from ``global[x, y, 0]``, or ``None`` without ``global``."""
        if "global" not in request.state:
            return None
        global_state = np.asarray(request.state["global"])
        if global_state.ndim != 3:
            raise LabelInputError(
                f"{self.teacher_id}: state['global'] must be the (W, H, C) map of battle_v4, "
                f"got shape {global_state.shape}"
            )
        return global_state[..., 0] > 0

    def _targets(
        self,
        rows: np.ndarray,
        positions: np.ndarray,
        hp: np.ndarray,
        alive: np.ndarray,
        team_ids: np.ndarray,
    ) -> np.ndarray:
        """Return each row's (B,) target row, -1 for rows without a living enemy."""
        enemy = alive[None, :] & (team_ids[None, :] != team_ids[rows][:, None])  # (B, N)
        offsets = positions[None, :, :] - positions[rows][:, None, :]  # (B, N, 2)
        with np.errstate(invalid="ignore"):
            distance = np.sqrt((offsets**2).sum(axis=-1))  # (B, N)
            reachable = enemy & (np.abs(offsets) <= 1).all(axis=-1)  # (B, N)

        weakest_in_range = np.where(reachable, hp[None, :], np.inf).argmin(axis=1)  # (B,)
        priority = np.where(enemy, distance + self.spec.hp_weight * hp[None, :], np.inf)  # (B, N)
        best = priority.argmin(axis=1)  # (B,)
        in_range = reachable.any(axis=1)
        target = np.where(in_range, weakest_in_range, best)
        return np.where(enemy.any(axis=1), target, -1)

    def _move_scores(
        self,
        own: np.ndarray,
        goal: np.ndarray,
        positions: np.ndarray,
        alive: np.ndarray,
        walls: np.ndarray | None,
    ) -> np.ndarray:
        """Return (B, 13) move scores: minus the distance to the target after the move."""
        cells = own[:, None, :] + BATTLE_MOVE_OFFSETS[None, :, :]  # (B, 13, 2)
        scores = -np.sqrt(((goal[:, None, :] - BATTLE_MOVE_OFFSETS[None, :, :]) ** 2).sum(axis=-1))

        # Moves into a cell that another living agent occupies, or into a wall, go nowhere.
        others = positions[alive]  # (M, 2)
        occupied = (cells[:, :, None, :] == others[None, None, :, :]).all(axis=-1).any(axis=-1)  # (B, 13)
        occupied[:, BATTLE_STAY_ACTION] = False
        blocked = occupied | self._in_wall(cells, walls)
        return np.where(blocked, BLOCKED_SCORE, scores)

    @staticmethod
    def _in_wall(cells: np.ndarray, walls: np.ndarray | None) -> np.ndarray:
        """Return (B, K) bool: the cells that are walls or off the map; all False without a map."""
        if walls is None:
            return np.zeros(cells.shape[:2], dtype=bool)
        x = np.nan_to_num(cells[..., 0], nan=-1).astype(np.int64)
        y = np.nan_to_num(cells[..., 1], nan=-1).astype(np.int64)
        inside = (x >= 0) & (x < walls.shape[0]) & (y >= 0) & (y < walls.shape[1])
        hit = np.ones(cells.shape[:2], dtype=bool)
        hit[inside] = walls[x[inside], y[inside]]
        return hit

    def _attack_scores(
        self,
        own: np.ndarray,
        rows: np.ndarray,
        positions: np.ndarray,
        hp: np.ndarray,
        alive: np.ndarray,
        team_ids: np.ndarray,
    ) -> np.ndarray:
        """Return (B, 8) attack scores: high on cells with an enemy, more for a wounded one."""
        cells = own[:, None, :] + BATTLE_ATTACK_OFFSETS[None, :, :]  # (B, 8, 2)
        enemy = alive[None, :] & (team_ids[None, :] != team_ids[rows][:, None])  # (B, N)
        at_cell = (cells[:, :, None, :] == positions[None, None, :, :]).all(axis=-1)  # (B, 8, N)
        at_cell &= enemy[:, None, :]
        weakness = np.where(at_cell, 1.0 - hp[None, None, :], -np.inf).max(axis=-1)  # (B, 8)
        return np.where(np.isfinite(weakness), ATTACK_SCORE + weakness, BLOCKED_SCORE)
