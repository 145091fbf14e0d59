"""The shared machinery of the privileged planners: a depth-limited lookahead over action sequences.

Each planner labels one request (one world at one step) in two stages:

1. A global step over the whole privileged state, shared by every state of the batch.
   It assigns agents to goals (food, prey, targets) and predicts where every agent will
   be over the next D steps under a simple model.
2. A per-agent search over all ``A ** D`` sequences of the agent's own actions. Each
   sequence is scored by the world model's rewards along the way, with the other
   agents following the prediction, plus a discounted terminal value from the global
   picture. ``Q(a)`` is the best score of the sequences that start with ``a``, and the
   label is ``softmax(Q / temperature)`` over the legal actions.

The search is vectorised over the sequences and over chunks of agents, so its cost grows
with ``A ** D`` and not with Python work per agent. ``depth`` is the cost knob: every
extra step multiplies the work by five.

Shape letters used by the planners:

    B  states in a request (agent rows)
    C  alive agent rows in one search chunk
    N  agent rows in the world
    A  actions (5 on the native grid worlds)
    D  search depth, in steps
    S  action sequences, ``A ** D``
    K  candidate goals (food, prey) scored per agent
    M  other agents (predators) modelled per candidate
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from policies.teacher import LabelInputError, LabelRequest, Teacher, softmax
from sim.worlds.grid import MOVES, GridWorld

PLANNER_VERSION = "1"
"""Version of the planners' algorithms and model constants, which starts every planner's
``version`` string. Bump it whenever a change could change the labels."""

MAX_DEPTH = 7
"""Deepest search allowed: ``5 ** 7`` = 78,125 sequences per agent."""

CHUNK_ELEMENTS = 2**20
"""Elements of the largest array one search chunk allocates. It bounds memory at about
8 MiB per int64 array, whatever the batch size."""


@dataclasses.dataclass(frozen=True)
class SearchKnobs:
    """The settings every planner shares, resolved from a ``PlannerSpec``."""

    depth: int
    """D, steps of the lookahead."""
    temperature: float
    """Softmax temperature over Q values, in reward units."""
    discount: float
    """Per-step discount of rewards and of the terminal value."""
    neighbours: int
    """Candidate goals per agent that the assignment considers before widening its search."""


class LookaheadPlanner(Teacher):
    """A privileged teacher that searches over each agent's action sequences.

    Subclasses name the state keys they read in ``state_keys``, compute the global step
    in ``_plan`` and score one chunk of agents in ``_search``. This class validates the
    state and rows, runs the chunks, turns Q values into probabilities and fills the
    auxiliary targets:

    - ``"goal"``: (B, 2) offset ``(dy, dx)`` from the agent to the cell of the goal the
      planner chose, divided by ``map_size - 1`` so it lies in [-1, 1].
    - ``"value"``: (B,) the planner's value estimate, the largest Q over legal actions.

    Rows whose agent is dead in ``state["alive"]`` get uniform probabilities over the
    legal actions, a zero goal offset and a zero value.
    """

    requires_state = True
    aux_shapes: Mapping[str, tuple[int, ...]] = {"goal": (2,), "value": ()}
    state_keys: tuple[str, ...] = ("positions", "alive")
    """Keys of ``World.state()`` that ``_plan`` reads."""
    candidates_per_step: int = 1
    """Array elements per (sequence, step) in one agent's search, which sizes the chunks."""
    default_depth: int = 3
    """Depth used when the spec leaves ``depth`` unset. Each world's planner sets a depth
    whose median label cost measured 1 ms or more (2 to 8 ms) on a shared 2-core machine
    with 64-agent worlds, while one step less measured 0.3 to 2 ms, so the default teacher
    is the expensive one."""
    default_temperature: float = 0.1
    """Temperature used when the spec leaves ``temperature`` unset. Each world's planner
    sets one that keeps most labels neither one-hot nor uniform on that world's Q scale."""

    def __init__(self, world: GridWorld, knobs: SearchKnobs) -> None:
        super().__init__()
        self.world_name = world.name
        self.teacher_id = f"planner/{world.name}"
        self.num_actions = world.num_actions
        self.observation_shape = tuple(world.observation_shape)
        self.map_size = world.map_size
        self.knobs = knobs
        self.depth = knobs.depth
        self.temperature = knobs.temperature
        self.discount = knobs.discount

        self.sequences = action_sequences(self.num_actions, self.depth)  # (S, D)
        self.step_discounts = knobs.discount ** np.arange(self.depth)  # (D,)
        self.terminal_discount = knobs.discount**self.depth
        work = self.sequences.size * self.candidates_per_step
        self.chunk_size = max(1, CHUNK_ELEMENTS // work)

        rules = "".join(f";{name}={value}" for name, value in self.rules().items())
        self.version = (
            f"{PLANNER_VERSION};depth={knobs.depth};temperature={knobs.temperature};"
            f"discount={knobs.discount};neighbours={knobs.neighbours}{rules}"
        )

    def rules(self) -> dict[str, Any]:
        """Return the world rules the planner's model uses, which enter its ``version``."""
        return {"map_size": self.map_size}

    # The label pipeline.

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        state = self._read_state(request.state)
        rows = self._check_rows(np.asarray(request.rows, dtype=np.int64), state)
        batch = rows.shape[0]
        positions = state["positions"]

        # Global step, then the search over chunks of alive agents.
        plan = self._plan(state)
        q_values = np.zeros((batch, self.num_actions))  # (B, A)
        goals = positions[rows].copy()  # (B, 2) cell of each chosen goal
        searched = np.flatnonzero(state["alive"][rows])
        for start in range(0, searched.size, self.chunk_size):
            chunk = searched[start : start + self.chunk_size]
            q_values[chunk], goals[chunk] = self._search(plan, rows[chunk])

        # Probabilities from Q values; dead rows get uniform legal probabilities.
        mask = request.action_mask
        legal = np.ones((batch, self.num_actions), dtype=bool) if mask is None else mask
        probs = softmax(q_values, temperature=self.temperature, mask=legal)  # (B, A)
        dead = ~state["alive"][rows]
        probs[dead] = legal[dead] / legal[dead].sum(axis=1, keepdims=True)
        value = np.where(legal, q_values, -np.inf).max(axis=1) if batch else np.zeros(0)
        value[dead] = 0.0

        offsets = (goals - positions[rows]) / max(self.map_size - 1, 1)  # (B, 2)
        return probs, {"goal": offsets.astype(np.float32), "value": value.astype(np.float32)}

    @abc.abstractmethod
    def _plan(self, state: Mapping[str, np.ndarray]) -> Any:
        """Compute the global step shared by every state of one request."""

    @abc.abstractmethod
    def _search(self, plan: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (C, A) Q values and (C, 2) goal cells for a chunk of C alive agent rows."""

    # State validation.

    def _read_state(self, state: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        assert state is not None, "Teacher.validate_request checks that a privileged request has state"
        for key in self.state_keys:
            if key not in state:
                raise LabelInputError(
                    f"{self.teacher_id}: state is missing key {key!r}, which the planner reads; "
                    f"pass World.state() of a {self.world_name} world"
                )
        arrays = {key: np.asarray(state[key]) for key in self.state_keys}

        positions, alive = arrays["positions"], arrays["alive"]
        if positions.ndim != 2 or positions.shape[1] != 2 or not np.issubdtype(positions.dtype, np.integer):
            raise LabelInputError(
                f"{self.teacher_id}: state['positions'] must be an integer array of shape (N, 2), "
                f"got {positions.dtype} {positions.shape}"
            )
        if alive.shape != (positions.shape[0],) or alive.dtype != bool:
            raise LabelInputError(
                f"{self.teacher_id}: state['alive'] must be a bool array of shape ({positions.shape[0]},), "
                f"got {alive.dtype} {alive.shape}"
            )
        for key in self.state_keys:
            if key.endswith("positions"):
                self._check_cells(key, arrays[key])
        arrays["positions"] = positions.astype(np.int64, copy=False)
        return arrays

    def _check_cells(self, key: str, cells: np.ndarray) -> None:
        """Raise unless ``cells`` is an (X, 2) integer array of cells inside the planner's map."""
        if cells.ndim != 2 or cells.shape[1] != 2 or not np.issubdtype(cells.dtype, np.integer):
            raise LabelInputError(
                f"{self.teacher_id}: state[{key!r}] must be an integer array of shape (X, 2), "
                f"got {cells.dtype} {cells.shape}"
            )
        outside = ((cells < 0) | (cells >= self.map_size)).any(axis=1)
        if outside.any():
            index = int(np.flatnonzero(outside)[0])
            raise LabelInputError(
                f"{self.teacher_id}: state[{key!r}][{index}] = {cells[index].tolist()} lies outside the "
                f"{self.map_size}x{self.map_size} map of this planner; build the planner with the "
                "world's own options and num_agents (PlannerSpec.from_world_spec)"
            )

    def _check_rows(self, rows: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
        num_agents = state["positions"].shape[0]
        outside = (rows < 0) | (rows >= num_agents)
        if outside.any():
            index = int(np.flatnonzero(outside)[0])
            raise LabelInputError(
                f"{self.teacher_id}: rows[{index}] = {int(rows[index])} is out of range for a state "
                f"of {num_agents} agents; rows must lie in [0, {num_agents})"
            )
        return rows

    # Helpers shared by the subclasses.

    def sequence_positions(self, start: np.ndarray) -> np.ndarray:
        """(C, S, D, 2) cells visited by every action sequence from each (C, 2) ``start``."""
        positions = np.empty((start.shape[0], *self.sequences.shape, 2), dtype=np.int64)
        current = np.broadcast_to(start[:, None, :], (start.shape[0], self.sequences.shape[0], 2))
        for t in range(self.depth):
            current = np.clip(current + MOVES[self.sequences[:, t]], 0, self.map_size - 1)
            positions[:, :, t] = current
        return positions

    def q_from_returns(self, returns: np.ndarray) -> np.ndarray:
        """(C, A) best return of the sequences that start with each action, from (C, S) returns."""
        # action_sequences lists sequences with the first action varying slowest.
        return returns.reshape(returns.shape[0], self.num_actions, -1).max(axis=2)


def action_sequences(num_actions: int, depth: int) -> np.ndarray:
    """(A ** depth, depth) every sequence of ``depth`` actions, the first action varying slowest."""
    return np.array(list(itertools.product(range(num_actions), repeat=depth)), dtype=np.int64)


def steps_to_reach(offset: np.ndarray, radius: int) -> np.ndarray:
    """Moves needed to come within Chebyshev distance ``radius`` of a cell ``offset`` (..., 2) away.

    With one-axis moves, each axis must close the gap beyond ``radius`` on its own.
    """
    gap = np.maximum(np.abs(offset) - radius, 0)
    return gap[..., 0] + gap[..., 1]


def chebyshev(offset: np.ndarray) -> np.ndarray:
    """Chebyshev length of (..., 2) offsets."""
    return np.abs(offset).max(axis=-1)


def step_toward(position: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Return the cell after one greedy move from ``position`` toward ``goal`` (both (..., 2)).

    The move closes the axis with the larger gap, the vertical one on ties, and stays
    when the agent is on the goal. It never leaves the map because the goal is inside.
    """
    delta = goal - position
    vertical = np.abs(delta[..., 0]) >= np.abs(delta[..., 1])
    move = np.zeros_like(delta)
    move[..., 0] = np.where(vertical, np.sign(delta[..., 0]), 0)
    move[..., 1] = np.where(vertical, 0, np.sign(delta[..., 1]))
    return position + move


def flee_step(position: np.ndarray, threat: np.ndarray, map_size: int) -> np.ndarray:
    """Return the cell after the move from ``position`` (..., 2) that ends farthest from ``threat``.

    Distance is Euclidean, which makes a fleeing agent run straight away from its
    threat, where Manhattan distance would tie that with a sideways step. Walls clip the
    moves, and ties go to the first action in ``ACTION_NAMES`` order, so a cornered
    agent stays.
    """
    moved = np.clip(position[..., None, :] + MOVES, 0, map_size - 1)  # (..., A, 2)
    distance = ((moved - threat[..., None, :]) ** 2).sum(axis=-1)  # (..., A) squared
    best = distance.argmax(axis=-1)
    return np.take_along_axis(moved, best[..., None, None], axis=-2)[..., 0, :]


def greedy_assign(
    agents: np.ndarray, targets: np.ndarray, capacity: np.ndarray, *, neighbours: int
) -> np.ndarray:
    """Assign agents to targets, nearest pairs first, up to each target's capacity.

    Every round, each unassigned agent proposes to its nearest target (Manhattan
    distance) among its ``neighbours`` nearest that still has room, and each target
    accepts its closest proposers up to its remaining capacity. When no agent has an
    open target among its neighbours, a k-d tree over the open targets finds new ones.
    Every round accepts at least one agent, so the loop ends.

    Args:
        agents: (M, 2) agent cells.
        targets: (T, 2) target cells.
        capacity: (T,) agents each target takes.
        neighbours: targets each agent considers per k-d tree query.

    Returns:
        (M,) int64 index of each agent's target, or -1 once every target is full.
    """
    assignment = np.full(agents.shape[0], -1, dtype=np.int64)
    remaining = np.asarray(capacity, dtype=np.int64).copy()
    pending = np.arange(agents.shape[0])
    while pending.size and (remaining > 0).any():
        open_targets = np.flatnonzero(remaining > 0)
        k = min(neighbours, open_targets.size)
        distance, index = cKDTree(targets[open_targets]).query(agents[pending], k=k, p=1)
        distance = distance.reshape(pending.size, k)  # (P, k)
        choices = open_targets[index.reshape(pending.size, k)]  # (P, k)

        while pending.size:
            has_room = remaining[choices] > 0  # (P, k)
            proposers = np.flatnonzero(has_room.any(axis=1))
            if not proposers.size:
                break
            pick = has_room[proposers].argmax(axis=1)
            proposed = choices[proposers, pick]
            order = np.lexsort((pending[proposers], distance[proposers, pick], proposed))
            sorted_targets = proposed[order]
            group_start = np.flatnonzero(np.r_[True, sorted_targets[1:] != sorted_targets[:-1]])
            group_size = np.diff(np.r_[group_start, sorted_targets.size])
            rank = np.arange(sorted_targets.size) - np.repeat(group_start, group_size)
            accepted = order[rank < remaining[sorted_targets]]

            assignment[pending[proposers[accepted]]] = proposed[accepted]
            remaining -= np.bincount(proposed[accepted], minlength=remaining.size)
            keep = np.ones(pending.size, dtype=bool)
            keep[proposers[accepted]] = False
            pending, distance, choices = pending[keep], distance[keep], choices[keep]
    return assignment


def nearest_indices(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) indices of the ``k`` nearest ``points`` to each query (Manhattan) and a validity mask.

    When there are fewer than ``k`` points, the missing columns are invalid (index 0).
    """
    indices = np.zeros((queries.shape[0], k), dtype=np.int64)
    valid = np.zeros((queries.shape[0], k), dtype=bool)
    found = min(k, points.shape[0])
    if found and queries.shape[0]:
        _, index = cKDTree(points).query(queries, k=found, p=1)
        indices[:, :found] = index.reshape(queries.shape[0], found)
        valid[:, :found] = True
    return indices, valid


def neighbourhood_counts(points: np.ndarray, cells: np.ndarray, *, radius: int, map_size: int) -> np.ndarray:
    """(Y,) number of the (X, 2) ``points`` within Chebyshev ``radius`` of each of the (Y, 2) ``cells``."""
    counts = np.bincount(points[:, 0] * map_size + points[:, 1], minlength=map_size * map_size)
    padded = np.pad(counts.reshape(map_size, map_size), radius)
    side = 2 * radius + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side))
    return windows[cells[:, 0], cells[:, 1]].sum(axis=(1, 2))


def median_or(values: np.ndarray, default: float) -> float:
    """Median of ``values``, or ``default`` when it is empty."""
    return float(np.median(values)) if values.size else default
