"""Query strategies: which visited states a teacher labels under the label budget.

Each strategy scores the alive agents of one world step from the student's action
probabilities and picks the best-scoring share ``fraction`` of them. The share is
rounded stochastically (``3.4`` becomes 3 or 4 with chances 0.6 and 0.4), so the number
of labels matches the budget on average even when a step has few agents.

- ``random``: uniformly random states, the baseline.
- ``uncertainty``: the states where the student's action distribution has the highest
  entropy (uncertainty sampling).
- ``margin``: the states with the smallest gap between the student's two most likely
  actions (margin sampling).

Shape letters: B alive agents of one world step, A actions.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("random", "uncertainty", "margin")


def budget_count(size: int, fraction: float, rng: np.random.Generator) -> int:
    """Return ``fraction * size`` rounded stochastically, so its mean is exact."""
    expected = fraction * size
    count = int(expected)
    if rng.random() < expected - count:
        count += 1
    return min(count, size)


def score_states(strategy: str, student_probs: np.ndarray) -> np.ndarray:
    """Return (B,) scores; higher means more worth labelling."""
    if strategy == "uncertainty":
        probs = np.clip(student_probs, 1e-12, 1.0)
        return -(student_probs * np.log(probs)).sum(axis=1)
    if strategy == "margin":
        top_two = np.sort(student_probs, axis=1)[:, -2:] if student_probs.shape[1] > 1 else student_probs
        return -(top_two[:, -1] - top_two[:, 0])
    raise ValueError(f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def select_states(strategy: str, student_probs: np.ndarray, *, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Return the indices of the states to label among ``student_probs`` (B, A), sorted.

    Raises:
        ValueError: unknown strategy, or ``fraction`` outside [0, 1].
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    size = student_probs.shape[0]
    count = budget_count(size, fraction, rng)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "random":
        return np.sort(rng.choice(size, size=count, replace=False))

    # Random tie-breaking: equal scores (an untrained student) must not favour low rows.
    scores = score_states(strategy, student_probs) + rng.random(size) * 1e-9
    chosen = np.argpartition(-scores, count - 1)[:count]
    return np.sort(chosen)
