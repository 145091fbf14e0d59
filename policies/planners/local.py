"""A greedy local heuristic for the native worlds: the baseline the planners must beat.

The heuristic reads only the agent's observation window, never ``World.state()``:

- foraging_v0: step toward the nearest visible food. Within one cell of food, wait for
  helpers (stay) with probability ``WAIT_PROBABILITY``, else take a random step, so that
  agents do not wait forever beside heavy food.
- predator_prey_v0: a predator steps toward the nearest visible prey; a prey takes the
  move that ends farthest (Euclidean) from the nearest visible predator, never into a
  wall.
- spread_v0: stay when alone on a target; else step toward the nearest visible target
  that no other agent occupies.

With nothing relevant in view, an agent takes a random move that does not walk into a
visible wall. Ties between equally near cells and equally good moves are broken at
random, with a generator seeded from the spec's seed and the world's seed.

Shape letters: B agent rows, V the window side, C channels, A actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim.rollout.policy import NO_ACTION
from sim.world import World
from sim.worlds.grid import MOVES, WALL_CHANNEL

WAIT_PROBABILITY = 0.9
"""Chance that a foraging agent within one cell of food stays to wait for helpers."""

TIE_NOISE = 0.1
"""Largest random amount added to window distances, which breaks ties without reordering
cells of different integer distance."""

SUPPORTED_WORLDS = ("foraging_v0", "predator_prey_v0", "spread_v0")


@dataclasses.dataclass(frozen=True)
class LocalHeuristicPolicySpec:
    """The local heuristic baseline of a native world, as a ``sim.rollout`` policy spec."""

    seed: int = 0
    """Base seed, mixed with the per-world seed the worker passes to ``build``."""

    def build(self, world: World, *, seed: int) -> LocalHeuristicPolicy:
        """Build the heuristic for ``world``.

        Raises:
            ValueError: ``world`` is not a native grid world.
        """
        if world.name not in SUPPORTED_WORLDS:
            raise ValueError(
                f"the local heuristic supports {', '.join(SUPPORTED_WORLDS)}, got world {world.name!r}"
            )
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, seed]))
        return LocalHeuristicPolicy(world_name=world.name, view_radius=world.view_radius, rng=rng)


class LocalHeuristicPolicy:
    """A batched policy that picks each alive agent's action from its own observation window,
    by the per-world rules in this module's docstring."""

    def __init__(self, *, world_name: str, view_radius: int, rng: np.random.Generator) -> None:
        self.world_name = world_name
        self.view_radius = view_radius
        self._rng = rng
        side = 2 * view_radius + 1
        offsets = np.arange(side) - view_radius
        self._offsets = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1)  # (V, V, 2)
        self._distance = np.abs(self._offsets).sum(axis=-1).astype(np.float64)  # (V, V)

    def act(self, obs: np.ndarray, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 actions, ``NO_ACTION`` for dead rows."""
        if self.world_name == "foraging_v0":
            actions = self._forage(obs)
        elif self.world_name == "predator_prey_v0":
            actions = self._hunt_or_flee(obs)
        else:
            actions = self._spread(obs)

        if action_mask is not None:
            illegal = ~action_mask[np.arange(actions.size), actions]
            if illegal.any():
                actions[illegal] = self._random_legal(action_mask[illegal])
        return np.where(alive, actions, NO_ACTION).astype(np.int64)

    # One rule per world.

    def _forage(self, obs: np.ndarray) -> np.ndarray:
        food = obs[..., 2] > 0  # (B, V, V)
        offset, found = self._nearest(food)
        wander = self._random_walk(obs)
        actions = np.where(found, self._step_toward(offset), wander)
        beside = found & (np.abs(offset).max(axis=1) <= 1)
        waiting = beside & (self._rng.random(obs.shape[0]) < WAIT_PROBABILITY)
        actions[beside] = np.where(waiting[beside], 0, wander[beside])
        return actions

    def _hunt_or_flee(self, obs: np.ndarray) -> np.ndarray:
        r = self.view_radius
        is_predator = obs[:, r, r, 3] > 0
        prey_offset, prey_found = self._nearest(obs[..., 2] > 0)
        predator_offset, predator_found = self._nearest(obs[..., 1] > 0)
        actions = self._random_walk(obs)
        hunting = is_predator & prey_found
        actions[hunting] = self._step_toward(prey_offset[hunting])
        fleeing = ~is_predator & predator_found
        actions[fleeing] = self._flee(obs[fleeing], predator_offset[fleeing])
        return actions

    def _spread(self, obs: np.ndarray) -> np.ndarray:
        r = self.view_radius
        free_targets = (obs[..., 2] > 0) & (obs[..., 1] == 0)  # (B, V, V)
        settled = free_targets[:, r, r]
        offset, found = self._nearest(free_targets)
        actions = np.where(found, self._step_toward(offset), self._random_walk(obs))
        actions[settled] = 0
        return actions

    # Shared moves.

    def _nearest(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 2) offset of the nearest true cell of each (V, V) window, and (B,) whether one exists."""
        noise = self._rng.random(cells.shape) * TIE_NOISE
        distance = np.where(cells, self._distance + noise, np.inf).reshape(cells.shape[0], -1)  # (B, V * V)
        index = distance.argmin(axis=1)
        found = np.isfinite(distance[np.arange(cells.shape[0]), index])
        return self._offsets.reshape(-1, 2)[index], found

    def _step_toward(self, offset: np.ndarray) -> np.ndarray:
        """(B,) action that closes the larger axis of each offset, a random one on ties."""
        vertical_gap, horizontal_gap = np.abs(offset[:, 0]), np.abs(offset[:, 1])
        coin = self._rng.random(offset.shape[0]) < 0.5
        vertical = (vertical_gap > horizontal_gap) | ((vertical_gap == horizontal_gap) & coin)
        vertical_action = np.where(offset[:, 0] < 0, 1, 2)  # up, down
        horizontal_action = np.where(offset[:, 1] < 0, 3, 4)  # left, right
        actions = np.where(vertical, vertical_action, horizontal_action)
        return np.where((offset == 0).all(axis=1), 0, actions)

    def _flee(self, obs: np.ndarray, threat: np.ndarray) -> np.ndarray:
        """(B,) move that ends farthest (Euclidean) from each threat offset, avoiding visible walls."""
        distance = ((threat[:, None, :] - MOVES[None]) ** 2).sum(axis=-1).astype(np.float64)  # (B, A) squared
        distance += self._rng.random(distance.shape) * TIE_NOISE
        distance[self._walls_ahead(obs)] = -np.inf
        return distance.argmax(axis=1)

    def _random_walk(self, obs: np.ndarray) -> np.ndarray:
        """(B,) random moves, never into a visible wall."""
        scores = self._rng.random((obs.shape[0], MOVES.shape[0]))  # (B, A)
        scores[self._walls_ahead(obs)] = -1.0
        return scores.argmax(axis=1)

    def _walls_ahead(self, obs: np.ndarray) -> np.ndarray:
        """(B, A) whether each move would walk into a visible wall."""
        r = self.view_radius
        if r == 0:
            return np.zeros((obs.shape[0], MOVES.shape[0]), dtype=bool)
        return obs[:, r + MOVES[:, 0], r + MOVES[:, 1], WALL_CHANNEL] > 0

    def _random_legal(self, mask: np.ndarray) -> np.ndarray:
        scores = np.where(mask, self._rng.random(mask.shape), -1.0)
        return scores.argmax(axis=1)
