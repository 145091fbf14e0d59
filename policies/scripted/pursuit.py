"""A scripted surround teacher for SISL ``pursuit_v5``.

An evader is caught when pursuers stand on every open cell next to it: up, down, left and
right, leaving out cells off the map or inside the building. The script forms teams
greedily: it picks the evader whose open neighbours the free pursuers reach with the
smallest total path length, gives each neighbour to one pursuer by
``scipy.optimize.linear_sum_assignment``, and repeats with the remaining pursuers. Evaders
next to a wall need fewer pursuers and so tend to be picked first. Pursuers left over
head for the nearest open neighbour of an evader. Every pursuer then takes the step
that shortens its path (around the building) to its goal cell.

Conventions of pettingzoo 1.27, checked by stepping the env against the internal
``pursuer_layer`` positions:

- ``state()["global"]`` is the env's ``state()``, a (Y, X, 3) image read as
  ``global[y, x, c]``: channel 0 is 1 on the building, 1 counts pursuers per cell and 2
  counts evaders per cell.
- Each observation is the (V, V, 3) crop ``global[y - r : y + r + 1, x - r : x + r + 1]``
  around its pursuer (``V = obs_range = 2r + 1``), with channel 0 set to 1 off the map.
- Actions: 0 moves to x - 1, 1 to x + 1, 2 to y + 1, 3 to y - 1, and 4 stays. A move
  into the building or off the map leaves the pursuer where it is.

The global state counts pursuers per cell but does not identify them, so the teacher
finds each requested pursuer's cell by matching its observation against the crops of the
global state around every cell that contains a pursuer.

Shape letters: B states in a request, P pursuers, V the observation window.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from policies.scripted.common import ScriptedTeacher, check_temperature
from policies.teacher import LabelInputError, LabelRequest

PURSUIT_NUM_ACTIONS = 5

PURSUIT_MOVES = np.array([(-1, 0), (1, 0), (0, 1), (0, -1), (0, 0)], dtype=np.int64)
"""(5, 2) ``(dx, dy)`` of actions 0 .. 4."""

PURSUIT_STAY_ACTION = 4

WALL, PURSUERS, EVADERS = 0, 1, 2
"""Channels of the global state and of the observations."""

SIDES = np.array([(-1, 0), (1, 0), (0, 1), (0, -1)], dtype=np.int64)
"""(4, 2) ``(dx, dy)`` of the cells that surround an evader."""

UNREACHABLE = 1e6
"""Path length used for cells that cannot be reached, in cells."""


@dataclasses.dataclass(frozen=True)
class ScriptedPursuitSpec:
    """Builds a ``ScriptedPursuitTeacher``."""

    temperature: float = 0.25
    """Softmax temperature over action scores, in cells of path length; lower is greedier."""

    def __post_init__(self) -> None:
        check_temperature(self.temperature, "ScriptedPursuitSpec")

    def build(self) -> ScriptedPursuitTeacher:
        """Construct the teacher."""
        return ScriptedPursuitTeacher(self)


class ScriptedPursuitTeacher(ScriptedTeacher):
    """Surround evaders in SISL ``pursuit_v5`` from the global state.

    Reads ``global`` and ``alive`` from the state and, to tell pursuers apart, the
    requested agents' own observations. The auxiliary target ``goal`` is the ``(dx, dy)``
    offset from the pursuer to its goal cell, zero without a goal.
    """

    teacher_id = "scripted/pursuit_v5"
    version = "1"
    num_actions = PURSUIT_NUM_ACTIONS
    aux_shapes = {"goal": (2,)}
    no_op_action = PURSUIT_STAY_ACTION

    def __init__(self, spec: ScriptedPursuitSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or ScriptedPursuitSpec()
        self.temperature = self.spec.temperature

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        image = self._global_image(request)  # (Y, X, 3)
        alive = self.state_array(request, "alive").astype(bool)  # (P,)
        rows = self.rows_of(request, alive.shape[0])
        open_cells = image[..., WALL] == 0  # (Y, X)
        distances = _path_lengths(open_cells.shape, open_cells.tobytes())  # (Y * X, Y * X)

        pursuer_cells = _cells_with(image[..., PURSUERS])  # (P', 2) (x, y), one row per pursuer
        # A row requested twice is located once, so its two observations do not compete.
        unique_rows, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        own_cells = self._locate(request.obs[first], unique_rows, image, pursuer_cells)[inverse]  # (B, 3)
        goals = _plan(pursuer_cells, _cells_with(image[..., EVADERS] > 0), open_cells, distances)  # (P', 2)

        located = own_cells[:, 2] >= 0
        own_goals = np.full((rows.size, 2), -1, dtype=np.int64)  # (B, 2)
        own_goals[located] = goals[own_cells[located, 2]]
        acting = alive[rows] & located & (own_goals[:, 0] >= 0)
        cells = own_cells[:, :2]
        scores = _move_scores(cells, own_goals, open_cells, distances)  # (B, 5)
        probs = self.scores_to_probs(scores, request, acting=acting)
        goal_offset = np.where(acting[:, None], own_goals - cells, 0).astype(np.float32)  # (B, 2)
        return probs, {"goal": goal_offset}

    def _global_image(self, request: LabelRequest) -> np.ndarray:
        image = self.state_array(request, "global")
        if image.ndim != 3 or image.shape[2] != 3:
            raise LabelInputError(
                f"{self.teacher_id}: state['global'] must be the (Y, X, 3) image of pursuit_v5, got "
                f"shape {image.shape}"
            )
        return np.asarray(image, dtype=np.float32)

    def _locate(
        self, obs: np.ndarray, rows: np.ndarray, image: np.ndarray, pursuer_cells: np.ndarray
    ) -> np.ndarray:
        """Return (B, 3) int64 ``(x, y, index into pursuer_cells)`` of the pursuers in ``rows``.

        Each observation is matched against the crops around the pursuer cells, and
        ``linear_sum_assignment`` pairs observations with pursuers so that two pursuers
        on one cell take that cell once each. Rows whose observation is all zero (dead
        pursuers) get -1.

        NOTE: two pursuers on different cells with identical windows are indistinguishable,
        so they may swap goals. With evaders and walls in view this is rare.
        """
        if obs.ndim != 4 or obs.shape[1] != obs.shape[2] or obs.shape[1] % 2 == 0 or obs.shape[3] != 3:
            raise LabelInputError(
                f"{self.teacher_id}: obs must have shape (B, V, V, 3) with V odd, the pursuers' own "
                f"observations; got {obs.shape}"
            )
        located = np.full((rows.size, 3), -1, dtype=np.int64)
        present = obs.reshape(rows.size, -1).any(axis=1)  # (B,)
        if not present.any() or pursuer_cells.shape[0] == 0:
            return located

        radius = obs.shape[1] // 2
        padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)))
        padded[..., WALL] = np.pad(image[..., WALL], radius, constant_values=1.0)
        window = 2 * radius + 1
        crops = np.stack([padded[y : y + window, x : x + window] for x, y in pursuer_cells])  # (P', V, V, 3)
        mismatch = np.abs(obs[present][:, None] - crops[None]).sum(axis=(2, 3, 4))  # (B', P')

        matched_rows, matched_cells = linear_sum_assignment(mismatch)
        unmatched = mismatch[matched_rows, matched_cells] > 1e-3
        if unmatched.any():
            row = int(rows[np.flatnonzero(present)[matched_rows[unmatched][0]]])
            raise LabelInputError(
                f"{self.teacher_id}: the observation of row {row} matches no pursuer cell of "
                "state['global']; obs and state must come from the same step of one world"
            )
        present_rows = np.flatnonzero(present)[matched_rows]
        located[present_rows, :2] = pursuer_cells[matched_cells]
        located[present_rows, 2] = matched_cells
        return located


def _cells_with(counts: np.ndarray) -> np.ndarray:
    """Return (K, 2) ``(x, y)`` cells of a (Y, X) count image, each repeated count times."""
    ys, xs = np.nonzero(counts)
    repeats = np.rint(counts[ys, xs]).astype(np.int64)
    return np.repeat(np.stack([xs, ys], axis=1), repeats, axis=0).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _path_lengths(shape: tuple[int, int], open_bytes: bytes) -> np.ndarray:
    """Return (Y * X, Y * X) shortest path lengths between the cells ``y * X + x`` of a map."""
    height, width = shape
    open_cells = np.frombuffer(open_bytes, dtype=bool).reshape(shape)
    index = np.arange(height * width).reshape(shape)
    sources, targets = [], []
    for a, b in ((index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])):
        both = open_cells.ravel()[a] & open_cells.ravel()[b]
        sources.append(a[both])
        targets.append(b[both])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    graph = csr_matrix((np.ones(sources.size), (sources, targets)), shape=(height * width,) * 2)
    lengths = shortest_path(graph, method="D", directed=False, unweighted=True)
    lengths[~np.isfinite(lengths)] = UNREACHABLE
    lengths.flags.writeable = False
    return lengths


def _surround_cells(evader: np.ndarray, open_cells: np.ndarray) -> np.ndarray:
    """Return (S, 2) ``(x, y)`` open cells next to ``evader``: the cells a catch needs."""
    cells = evader[None, :] + SIDES  # (4, 2)
    height, width = open_cells.shape
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < width) & (cells[:, 1] >= 0) & (cells[:, 1] < height)
    cells = cells[inside]
    return cells[open_cells[cells[:, 1], cells[:, 0]]]


def _plan(
    pursuers: np.ndarray, evaders: np.ndarray, open_cells: np.ndarray, distances: np.ndarray
) -> np.ndarray:
    """Return (P', 2) goal cells ``(x, y)`` of the pursuers, -1 where there is no evader."""
    width = open_cells.shape[1]
    goals = np.full((pursuers.shape[0], 2), -1, dtype=np.int64)
    if evaders.shape[0] == 0 or pursuers.shape[0] == 0:
        return goals
    evaders = np.unique(evaders, axis=0)
    sides = [_surround_cells(evader, open_cells) for evader in evaders]
    pursuer_index = pursuers[:, 1] * width + pursuers[:, 0]  # (P',)

    # Form teams: each round surrounds the evader that the free pursuers reach most cheaply.
    free = np.ones(pursuers.shape[0], dtype=bool)
    candidates = [i for i, cells in enumerate(sides) if cells.shape[0] > 0]
    while candidates:
        best = None
        for i in candidates:
            if sides[i].shape[0] > free.sum():
                continue
            free_rows = np.flatnonzero(free)
            cost = distances[np.ix_(pursuer_index[free_rows], sides[i][:, 1] * width + sides[i][:, 0])]
            assigned, side = linear_sum_assignment(cost)
            total = cost[assigned, side].sum()
            if best is None or total < best[0]:
                best = (total, i, free_rows[assigned], side)
        if best is None:
            break
        _, i, team, side = best
        goals[team] = sides[i][side]
        free[team] = False
        candidates.remove(i)

    # Pursuers without a team head for the nearest cell next to any evader.
    all_sides = np.concatenate(sides)
    if free.any() and all_sides.shape[0]:
        cost = distances[np.ix_(pursuer_index[free], all_sides[:, 1] * width + all_sides[:, 0])]
        goals[free] = all_sides[cost.argmin(axis=1)]
    return goals


def _move_scores(
    cells: np.ndarray, goals: np.ndarray, open_cells: np.ndarray, distances: np.ndarray
) -> np.ndarray:
    """Return (B, 5) action scores: minus the path length to the goal after the move."""
    height, width = open_cells.shape
    after = np.clip(cells, 0, None)[:, None, :] + PURSUIT_MOVES[None, :, :]  # (B, 5, 2)
    inside = (after[..., 0] >= 0) & (after[..., 0] < width) & (after[..., 1] >= 0) & (after[..., 1] < height)
    after = np.where(inside[..., None], after, np.clip(cells, 0, None)[:, None, :])
    blocked = ~open_cells[after[..., 1], after[..., 0]]
    after = np.where(blocked[..., None], np.clip(cells, 0, None)[:, None, :], after)
    goal_index = np.clip(goals[:, 1], 0, None) * width + np.clip(goals[:, 0], 0, None)  # (B,)
    return -distances[after[..., 1] * width + after[..., 0], goal_index[:, None]]
