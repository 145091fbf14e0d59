"""The teacher interface: label a batch of states with action probabilities.

A teacher is the expensive policy that students learn from. It labels a batch of
observations, optionally with privileged context: the agents' rows and ``World.state()``
at the step the observations were taken. It returns action probabilities that respect
the action mask, plus optional auxiliary targets such as the goal a planner chose or a
value estimate. Every label carries the teacher's identity and version, and every
teacher measures its own cost per label.

Shape letters: B states in a batch, A actions, O the observation shape.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

PROBABILITY_TOLERANCE = 1e-3
"""Largest accepted distance of a row's probability sum from 1 (float32 softmax rounding
stays far below it)."""

ILLEGAL_MASS_TOLERANCE = 1e-6
"""Largest probability a label may put on an action the mask forbids."""


class TeacherError(Exception):
    """Base class of the errors of teachers and the label service."""


class LabelInputError(TeacherError, ValueError):
    """A label request is malformed: wrong shape or dtype, or missing context."""


class LabelError(TeacherError, ValueError):
    """A teacher produced invalid probabilities: NaN, negative, not summing to one, or illegal."""


@dataclasses.dataclass(frozen=True)
class LabelRequest:
    """States to label, all from one world at one step."""

    obs: np.ndarray
    """(B, *O) float32 observations, as the students see them."""
    rows: np.ndarray | None = None
    """(B,) int64 rows of the agents in their world; privileged teachers need them."""
    state: Mapping[str, np.ndarray] | None = None
    """``World.state()`` at the step of ``obs``; privileged teachers need it."""
    action_mask: np.ndarray | None = None
    """(B, A) bool legal actions, or ``None`` when every action is legal."""

    @property
    def size(self) -> int:
        """B, the number of states."""
        return int(self.obs.shape[0])


@dataclasses.dataclass(frozen=True)
class Labels:
    """A teacher's labels for one ``LabelRequest``."""

    probs: np.ndarray
    """(B, A) float32 action probabilities; each row sums to one and is zero on illegal actions."""
    aux: Mapping[str, np.ndarray]
    """Auxiliary targets, each (B, ...), named by the teacher's ``aux_shapes``."""
    teacher_id: str
    """Identity of the teacher that made the labels, stored with every label."""
    teacher_version: str
    """Version of that teacher, stored with every label."""

    @property
    def size(self) -> int:
        """B, the number of labels."""
        return int(self.probs.shape[0])


@dataclasses.dataclass(frozen=True)
class TeacherCost:
    """The cost of one label."""

    us_per_label: float | None
    """Measured wall-clock microseconds per label, or ``None`` before the first label."""
    flops_per_label: float | None
    """Floating-point operations per label where they can be counted (networks), else ``None``."""
    params: int | None
    """Parameters of a network teacher, ``None`` for planners and remote models."""
    labels: int
    """Labels made so far; ``us_per_label`` is their mean."""


class TeacherSpec(Protocol):
    """A picklable description of a teacher that builds it where it runs (a Ray replica)."""

    def build(self) -> Teacher:
        """Construct the teacher."""
        ...


class Teacher(abc.ABC):
    """An expensive policy that labels batches of states.

    Subclasses set the attributes below and implement ``_label``. The public ``label``
    validates the request, times the call and validates the probabilities, so no teacher
    can hand out a silently wrong label. Teachers that gain from batching several
    requests into one computation (networks) override ``_label_many``.
    """

    teacher_id: str
    """Identity stored with every label, such as ``"planner/foraging_v0"``."""
    version: str
    """Version stored with every label; change it whenever the labels could change."""
    num_actions: int
    """A, the width of ``Labels.probs``."""
    observation_shape: tuple[int, ...] | None = None
    """O, the expected shape of one observation, or ``None`` to accept any shape."""
    requires_state: bool = False
    """True for privileged teachers, which need ``rows`` and ``state`` in every request."""
    aux_shapes: Mapping[str, tuple[int, ...]] = {}
    """Names and per-state shapes of the auxiliary targets this teacher returns."""

    def __init__(self) -> None:
        self._labels_made = 0
        self._seconds = 0.0
        self._lock = threading.Lock()

    # Public API.

    def label(self, request: LabelRequest) -> Labels:
        """Label one request.

        Raises:
            LabelInputError: the request is malformed.
            LabelError: the teacher's probabilities are invalid.
        """
        return self.label_many([request])[0]

    def label_many(self, requests: Sequence[LabelRequest]) -> list[Labels]:
        """Label several requests, in one computation where the teacher supports it."""
        for request in requests:
            self.validate_request(request)
        start = time.perf_counter()
        results = self._label_many(list(requests))
        elapsed = time.perf_counter() - start

        labels = []
        for request, (probs, aux) in zip(requests, results, strict=True):
            probs = self.validate_probs(probs, request)
            aux = self._validate_aux(aux, request.size)
            labels.append(Labels(probs, aux, self.teacher_id, self.version))
        with self._lock:
            self._labels_made += sum(request.size for request in requests)
            self._seconds += elapsed
        return labels

    def cost(self) -> TeacherCost:
        """Return the measured cost per label so far and the static cost figures."""
        with self._lock:
            labels, seconds = self._labels_made, self._seconds
        us_per_label = seconds / labels * 1e6 if labels else None
        return TeacherCost(us_per_label, self.flops_per_label(), self.param_count(), labels)

    def reset_cost(self) -> None:
        """Forget the measured time and label count, for example after a warm-up."""
        with self._lock:
            self._labels_made = 0
            self._seconds = 0.0

    def flops_per_label(self) -> float | None:
        """Floating-point operations per label, where countable."""
        return None

    def param_count(self) -> int | None:
        """Parameters of a network teacher, else ``None``."""
        return None

    def describe(self) -> dict[str, Any]:
        """Return identity and cost as plain data, for summaries and manifests."""
        return {
            "teacher_id": self.teacher_id,
            "version": self.version,
            "num_actions": self.num_actions,
            "requires_state": self.requires_state,
            "aux": {name: list(shape) for name, shape in self.aux_shapes.items()},
            **dataclasses.asdict(self.cost()),
        }

    # Subclass hooks.

    @abc.abstractmethod
    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """Return (B, A) probabilities and the auxiliary targets for a validated request."""

    def _label_many(
        self, requests: list[LabelRequest]
    ) -> list[tuple[np.ndarray, Mapping[str, np.ndarray]]]:
        return [self._label(request) for request in requests]

    # Validation.

    def validate_request(self, request: LabelRequest) -> None:
        """Raise ``LabelInputError`` unless ``request`` fits this teacher."""
        obs = request.obs
        if not isinstance(obs, np.ndarray):
            raise LabelInputError(f"{self.teacher_id}: obs must be a numpy array, got {type(obs).__name__}")
        if obs.dtype != np.float32:
            raise LabelInputError(
                f"{self.teacher_id}: obs must be float32, got {obs.dtype}; convert with obs.astype(np.float32)"
            )
        if obs.ndim < 1:
            raise LabelInputError(f"{self.teacher_id}: obs must have a batch axis, got shape {obs.shape}")
        if self.observation_shape is not None and obs.shape[1:] != tuple(self.observation_shape):
            raise LabelInputError(
                f"{self.teacher_id}: obs must have shape (B, {', '.join(map(str, self.observation_shape))}), "
                f"got {obs.shape}"
            )
        batch = obs.shape[0]

        mask = request.action_mask
        if mask is not None:
            if mask.shape != (batch, self.num_actions) or mask.dtype != bool:
                raise LabelInputError(
                    f"{self.teacher_id}: action_mask must be a bool array of shape ({batch}, {self.num_actions}), "
                    f"got {mask.dtype} {mask.shape}"
                )
            if batch and not mask.any(axis=1).all():
                row = int(np.flatnonzero(~mask.any(axis=1))[0])
                raise LabelInputError(f"{self.teacher_id}: action_mask row {row} allows no action")

        if self.requires_state:
            if request.state is None or request.rows is None:
                raise LabelInputError(
                    f"{self.teacher_id} is a privileged teacher: the request needs rows and state "
                    "(World.state() at the step of the observations)"
                )
            rows = np.asarray(request.rows)
            if rows.shape != (batch,) or not np.issubdtype(rows.dtype, np.integer):
                raise LabelInputError(
                    f"{self.teacher_id}: rows must be an integer array of shape ({batch},), got {rows.dtype} {rows.shape}"
                )

    def validate_probs(self, probs: Any, request: LabelRequest) -> np.ndarray:
        """Return ``probs`` as float32, or raise ``LabelError`` naming the first bad row."""
        probs = np.asarray(probs, dtype=np.float32)
        expected = (request.size, self.num_actions)
        if probs.shape != expected:
            raise LabelError(f"{self.teacher_id}: probabilities must have shape {expected}, got {probs.shape}")
        if probs.size == 0:
            return probs

        finite = np.isfinite(probs).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise LabelError(f"{self.teacher_id}: probabilities of row {row} contain NaN or inf: {probs[row]}")
        if (probs < 0).any():
            row = int(np.flatnonzero((probs < 0).any(axis=1))[0])
            raise LabelError(f"{self.teacher_id}: probabilities of row {row} are negative: {probs[row]}")
        sums = probs.sum(axis=1)
        off = np.abs(sums - 1.0) > PROBABILITY_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise LabelError(
                f"{self.teacher_id}: probabilities of row {row} sum to {sums[row]:.6f}, not 1: {probs[row]}"
            )
        if request.action_mask is not None:
            illegal = np.where(request.action_mask, 0.0, probs).max(axis=1) > ILLEGAL_MASS_TOLERANCE
            if illegal.any():
                row = int(np.flatnonzero(illegal)[0])
                raise LabelError(
                    f"{self.teacher_id}: row {row} puts probability on illegal actions: "
                    f"probs {probs[row]}, mask {request.action_mask[row]}"
                )
        return probs

    def _validate_aux(self, aux: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        checked = {}
        for name, shape in self.aux_shapes.items():
            if name not in aux:
                raise LabelError(f"{self.teacher_id}: auxiliary target {name!r} is missing from its labels")
            value = np.asarray(aux[name], dtype=np.float32)
            if value.shape != (batch, *shape):
                raise LabelError(
                    f"{self.teacher_id}: auxiliary target {name!r} must have shape {(batch, *shape)}, got {value.shape}"
                )
            if not np.isfinite(value).all():
                raise LabelError(f"{self.teacher_id}: auxiliary target {name!r} contains NaN or inf")
            checked[name] = value
        return checked


def softmax(values: np.ndarray, *, temperature: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax of ``values / temperature`` over the last axis; masked entries get probability 0."""
    logits = np.asarray(values, dtype=np.float64) / temperature
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)
