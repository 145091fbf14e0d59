"""Small deterministic teachers for tests and benchmarks, built from picklable specs.

- ``FixedTeacherSpec``: the same distribution for every state, with an optional sleep per
  call. It records which ``label_many`` call made each label, so tests can see batching.
- ``MatmulTeacherSpec``: a random float32 MLP plus a fixed-size matmul per call, so a
  call has a per-batch cost that batching amortises, like a network on an accelerator.
- ``FailingTeacherSpec``: fails on the requests whose first observation value is a marker.

Shape letters: B states, A actions, O the observation width, H the hidden width.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np

from policies.teacher import LabelRequest, Teacher, softmax

CALL_INDEX = "call_index"
"""Auxiliary target of ``FixedTeacher``: the index of the ``label_many`` call that made each label."""


@dataclasses.dataclass(frozen=True)
class FixedTeacherSpec:
    """A teacher that returns ``probs`` for every state, renormalised over the legal actions."""

    num_actions: int = 4
    """A, the number of actions."""
    observation_shape: tuple[int, ...] = (3,)
    """O, the shape of one observation."""
    probs: tuple[float, ...] | None = None
    """The distribution over the A actions; uniform when ``None``."""
    delay_ms: float = 0.0
    """Sleep per ``label_many`` call in milliseconds, the cost of a remote teacher."""
    requires_state: bool = False
    """Whether requests must carry ``rows`` and ``state``, like a privileged teacher."""

    def __post_init__(self) -> None:
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float64)
            if probs.shape != (self.num_actions,) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
                raise ValueError(
                    f"probs must be {self.num_actions} non-negative numbers summing to 1, got {self.probs}"
                )

    def build(self) -> FixedTeacher:
        """Build the teacher."""
        return FixedTeacher(self)


class FixedTeacher(Teacher):
    """The teacher ``FixedTeacherSpec`` describes."""

    teacher_id = "testing/fixed"
    version = "1"
    aux_shapes: Mapping[str, tuple[int, ...]] = {CALL_INDEX: ()}

    def __init__(self, spec: FixedTeacherSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_actions = spec.num_actions
        self.observation_shape = spec.observation_shape
        self.requires_state = spec.requires_state
        uniform = np.full(spec.num_actions, 1.0 / spec.num_actions)
        self._probs = np.asarray(spec.probs if spec.probs is not None else uniform, dtype=np.float64)  # (A,)
        self.calls = 0

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        return self._label_many([request])[0]

    def _label_many(self, requests: list[LabelRequest]) -> list[tuple[np.ndarray, Mapping[str, np.ndarray]]]:
        call_index = self.calls
        self.calls += 1
        if self.spec.delay_ms:
            time.sleep(self.spec.delay_ms / 1000.0)
        return [(self._probs_for(request), {CALL_INDEX: np.full(request.size, call_index, np.float32)}) for request in requests]

    def _probs_for(self, request: LabelRequest) -> np.ndarray:
        probs = np.broadcast_to(self._probs, (request.size, self.num_actions))  # (B, A)
        if request.action_mask is None:
            return probs.astype(np.float32)
        masked = np.where(request.action_mask, probs, 0.0)  # (B, A)
        totals = masked.sum(axis=1, keepdims=True)  # (B, 1)
        # Rows whose legal actions all have probability 0 fall back to uniform over the legal ones.
        uniform = request.action_mask / request.action_mask.sum(axis=1, keepdims=True)
        return np.where(totals > 0, masked / np.where(totals > 0, totals, 1.0), uniform).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class MatmulTeacherSpec:
    """A random MLP teacher whose every call also multiplies two fixed square matrices."""

    obs_dim: int = 64
    """O, the observation width."""
    num_actions: int = 8
    """A, the number of actions."""
    hidden_size: int = 256
    """H, the width of the two hidden layers; the per-state cost is about 2 (OH + HH + HA) FLOPs."""
    batch_matmul_size: int = 256
    """N of the (N, N) @ (N, N) float32 matmul run once per call: 2 N^3 FLOPs whatever the batch size."""
    seed: int = 0
    """Seed of the random weights."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "num_actions", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_matmul_size < 0:
            raise ValueError(f"batch_matmul_size must be >= 0, got {self.batch_matmul_size}")

    def build(self) -> MatmulTeacher:
        """Build the teacher."""
        return MatmulTeacher(self)


class MatmulTeacher(Teacher):
    """The teacher ``MatmulTeacherSpec`` describes. It labels all requests of a call in one pass."""

    teacher_id = "testing/matmul"
    version = "1"

    def __init__(self, spec: MatmulTeacherSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_actions = spec.num_actions
        self.observation_shape = (spec.obs_dim,)
        rng = np.random.default_rng(spec.seed)
        scale_in, scale_hidden = 1.0 / np.sqrt(spec.obs_dim), 1.0 / np.sqrt(spec.hidden_size)
        self._w1 = (rng.standard_normal((spec.obs_dim, spec.hidden_size)) * scale_in).astype(np.float32)  # (O, H)
        self._w2 = (rng.standard_normal((spec.hidden_size, spec.hidden_size)) * scale_hidden).astype(np.float32)  # (H, H)
        self._w3 = (rng.standard_normal((spec.hidden_size, spec.num_actions)) * scale_hidden).astype(np.float32)  # (H, A)
        size = spec.batch_matmul_size
        self._square = (rng.standard_normal((size, size)) / max(size, 1)).astype(np.float32)  # (N, N)

    def flops_per_label(self) -> float:
        """FLOPs of the MLP per state, without the per-call matmul."""
        spec = self.spec
        return 2.0 * (spec.obs_dim * spec.hidden_size + spec.hidden_size**2 + spec.hidden_size * spec.num_actions)

    def param_count(self) -> int:
        """Weights of the MLP."""
        return self._w1.size + self._w2.size + self._w3.size

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        return self._label_many([request])[0]

    def _label_many(self, requests: list[LabelRequest]) -> list[tuple[np.ndarray, Mapping[str, np.ndarray]]]:
        if self._square.size:
            self._square @ self._square  # the fixed per-call cost

        obs = np.concatenate([request.obs for request in requests])  # (B, O)
        masks = [
            request.action_mask if request.action_mask is not None else np.ones((request.size, self.num_actions), bool)
            for request in requests
        ]
        hidden = np.tanh(obs @ self._w1)  # (B, H)
        hidden = np.tanh(hidden @ self._w2)  # (B, H)
        probs = softmax(hidden @ self._w3, temperature=1.0, mask=np.concatenate(masks))  # (B, A)

        splits = np.cumsum([request.size for request in requests])[:-1]
        return [(part, {}) for part in np.split(probs, splits)]


@dataclasses.dataclass(frozen=True)
class FailingTeacherSpec:
    """A uniform teacher that fails on every request whose ``obs.flat[0]`` equals ``marker``."""

    marker: float = -1.0
    """The first observation value that makes a request fail."""
    error: str = "nan"
    """``"nan"``: return NaN probabilities, so the base class raises ``LabelError``;
    ``"runtime"``: raise ``RuntimeError`` from the teacher."""
    num_actions: int = 4
    """A, the number of actions."""
    observation_shape: tuple[int, ...] = (3,)
    """O, the shape of one observation."""

    def __post_init__(self) -> None:
        if self.error not in ("nan", "runtime"):
            raise ValueError(f"error must be 'nan' or 'runtime', got {self.error!r}")

    def build(self) -> FailingTeacher:
        """Build the teacher."""
        return FailingTeacher(self)


class FailingTeacher(Teacher):
    """The teacher ``FailingTeacherSpec`` describes."""

    teacher_id = "testing/failing"
    version = "1"

    def __init__(self, spec: FailingTeacherSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_actions = spec.num_actions
        self.observation_shape = spec.observation_shape

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        mask = request.action_mask
        if mask is None:
            mask = np.ones((request.size, self.num_actions), bool)
        probs = (mask / mask.sum(axis=1, keepdims=True)).astype(np.float32)  # (B, A) uniform over legal actions
        if request.size and request.obs.flat[0] == self.spec.marker:
            if self.spec.error == "runtime":
                raise RuntimeError(f"{self.teacher_id} failed on purpose: obs starts with the marker {self.spec.marker}")
            probs[:] = np.nan
        return probs, {}
