"""The batched policy protocol that rollout workers call, and the seeded random policy.

A ``PolicySpec`` is a picklable description sent to each worker. The worker calls
``spec.build(world, seed=...)`` once per world, with a seed derived from the world's seed,
so a world's actions do not depend on how the population is split over workers. The built
policy keeps the ``world`` it was built for, so a teacher may read ``world.state()``
inside ``act``.

Shape letters: B agent rows in one call (one world's N), A actions, O observation shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sim.world import World

NO_ACTION = -1
"""Action a policy returns for dead rows. Worlds ignore the entries of dead rows."""


@runtime_checkable
class BatchedPolicy(Protocol):
    """Chooses actions for every agent row of one world at once.

    A policy that can take new weights without a rebuild also defines
    ``set_weights(weights) -> None``, which ``RolloutWorker.set_weights`` calls.
    """

    def act(self, obs: np.ndarray, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 actions for (B, *O) float32 ``obs``.

        Args:
            obs: (B, *O) float32 observations. Rows of dead agents are zero.
            alive: (B,) bool, the rows that act. Other rows should get ``NO_ACTION``.
            action_mask: (B, A) bool legal actions, or ``None`` when all are legal.
        """
        ...


@runtime_checkable
class PolicySpec(Protocol):
    """A picklable recipe for a ``BatchedPolicy``, which workers build next to their worlds."""

    def build(self, world: World, *, seed: int) -> BatchedPolicy:
        """Build the policy for ``world``, seeding any randomness it has with ``seed``."""
        ...


@dataclasses.dataclass(frozen=True)
class RandomPolicySpec:
    """Uniformly random legal actions, reproducible from ``seed`` and the world's seed."""

    seed: int = 0
    """Base seed, mixed with the per-world seed the worker passes to ``build``."""

    def build(self, world: World, *, seed: int) -> RandomPolicy:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, seed]))
        return RandomPolicy(num_actions=world.num_actions, rng=rng)


class RandomPolicy:
    """Draws each alive row's action uniformly from its legal actions."""

    def __init__(self, *, num_actions: int, rng: np.random.Generator) -> None:
        self.num_actions = num_actions
        self._rng = rng

    def act(self, obs: Any, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 actions, ``NO_ACTION`` for dead rows.

        Raises:
            ValueError: an alive row has no legal action under ``action_mask``.
        """
        # One batched draw covers every row. Only alive rows with illegal actions are redrawn.
        actions = self._rng.integers(0, self.num_actions, size=alive.shape[0], dtype=np.int64)  # (B,)
        if action_mask is not None:
            restricted = np.flatnonzero(alive & ~action_mask.all(axis=1))
            if restricted.size:
                actions[restricted] = self._sample_legal(action_mask[restricted], restricted)
        actions[~alive] = NO_ACTION
        return actions

    def _sample_legal(self, mask: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Draw one legal action per row of the (R, A) ``mask``. Errors name rows by ``rows``."""
        legal_counts = mask.sum(axis=1)  # (R,)
        if not legal_counts.all():
            row = int(rows[np.flatnonzero(legal_counts == 0)[0]])
            raise ValueError(
                f"alive agent row {row} has no legal action under action_mask; "
                "a world must leave every alive agent at least one legal action"
            )
        picks = self._rng.integers(0, legal_counts)  # (R,) index among each row's legal actions
        cumulative = mask.cumsum(axis=1)  # (R, A)
        return (cumulative > picks[:, None]).argmax(axis=1)
