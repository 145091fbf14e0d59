"""Helpers shared by the scripted privileged teachers.

A scripted teacher scores every action of every requested agent from ``World.state()``
and turns the scores into probabilities with a softmax at a fixed temperature, so its
labels are soft but their argmax is the scripted action.

Shape letters: B states in a request, A actions, N agents (rows) in the world.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from policies.teacher import LabelInputError, LabelRequest, Teacher, softmax


def check_temperature(temperature: float, owner: str) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a positive finite number."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"{owner}: temperature must be a positive finite number, got {temperature!r}")


def check_positive_int(value: int, name: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class ScriptedTeacher(Teacher):
    """Base class of the scripted teachers: state look-up and score-to-probability helpers."""

    requires_state = True
    temperature: float
    no_op_action: int
    """The action that leaves an agent where it is; dead agents get all its probability."""

    def state_array(self, request: LabelRequest, key: str) -> np.ndarray:
        """Return ``request.state[key]`` as an array, or raise ``LabelInputError`` naming the key."""
        state: Mapping[str, np.ndarray] = request.state  # validate_request has checked that it is set
        if key not in state:
            raise LabelInputError(
                f"{self.teacher_id}: state has no {key!r} entry (keys: {sorted(state)}); pass "
                "World.state() of a world made by sim.from_pettingzoo from the env this teacher "
                "was written for"
            )
        return np.asarray(state[key])

    def rows_of(self, request: LabelRequest, num_agents: int) -> np.ndarray:
        """Return the request's rows as int64, or raise ``LabelInputError`` if one is out of range."""
        rows = np.asarray(request.rows, dtype=np.int64)  # (B,)
        bad = (rows < 0) | (rows >= num_agents)
        if bad.any():
            raise LabelInputError(
                f"{self.teacher_id}: row {int(rows[bad][0])} is out of range for a state of "
                f"{num_agents} agents; rows must lie in [0, {num_agents})"
            )
        return rows

    def scores_to_probs(
        self, scores: np.ndarray, request: LabelRequest, *, acting: np.ndarray
    ) -> np.ndarray:
        """Return (B, A) probabilities: a softmax of ``scores`` for acting rows, the no-op for the rest.

        Args:
            scores: (B, A) action scores, higher is better.
            request: The request, whose action mask (if any) zeroes illegal actions.
            acting: (B,) bool, the rows that the script chose actions for. The other rows
                (dead agents, agents with nothing to do) get the no-op. Where the mask
                forbids the no-op, they get a uniform choice among the legal actions.
        """
        mask = request.action_mask
        scores = np.asarray(scores, dtype=np.float64)  # (B, A)
        idle = np.full_like(scores, -1.0)
        idle[:, self.no_op_action] = 0.0
        # A huge gap makes the idle rows' softmax one-hot on the no-op at any temperature.
        scores = np.where(acting[:, None], scores, idle * 1e6)
        if mask is not None:
            forbidden_no_op = ~acting & ~mask[:, self.no_op_action]
            scores[forbidden_no_op] = 0.0
        return softmax(scores, temperature=self.temperature, mask=mask)
