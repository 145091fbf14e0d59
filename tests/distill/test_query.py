"""Query strategies and the label budget."""

from __future__ import annotations

import numpy as np
import pytest

from distill.query import budget_count, score_states, select_states


def probs_table() -> np.ndarray:
    return np.array([
        [1.0, 0.0, 0.0],    # certain
        [1 / 3, 1 / 3, 1 / 3],  # most uncertain
        [0.5, 0.5, 0.0],    # zero margin, medium entropy
        [0.8, 0.1, 0.1],
    ])


def test_uncertainty_picks_highest_entropy():
    chosen = select_states("uncertainty", probs_table(), fraction=0.25, rng=np.random.default_rng(0))
    assert chosen.tolist() == [1]


def test_margin_picks_smallest_gap():
    scores = score_states("margin", probs_table())
    assert np.argmax(scores) in (1, 2)
    assert scores[0] == pytest.approx(-1.0)


def test_random_respects_the_count():
    chosen = select_states("random", np.full((100, 4), 0.25), fraction=0.1, rng=np.random.default_rng(0))
    assert chosen.size == 10
    assert np.unique(chosen).size == 10


def test_budget_rounds_stochastically_to_the_exact_mean():
    rng = np.random.default_rng(0)
    counts = [budget_count(7, 0.1, rng) for _ in range(20_000)]
    assert set(counts) == {0, 1}
    assert np.mean(counts) == pytest.approx(0.7, abs=0.02)


def test_equal_scores_do_not_favour_low_rows():
    rng = np.random.default_rng(0)
    uniform = np.full((50, 5), 0.2)
    picks = np.concatenate([select_states("uncertainty", uniform, fraction=0.1, rng=rng) for _ in range(200)])
    assert picks.mean() == pytest.approx(24.5, abs=3)


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match=r"unknown query strategy 'greedy'; choose one of random, uncertainty, margin"):
        select_states("greedy", probs_table(), fraction=0.5, rng=np.random.default_rng(0))


def test_fraction_out_of_range_raises():
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 1.5"):
        select_states("random", probs_table(), fraction=1.5, rng=np.random.default_rng(0))
