"""Privileged input features for network teachers.

``NearestOffsets`` turns ``World.state()`` into a flat feature vector per agent, which a
network teacher takes as its extra input; a teacher with such features sets
``requires_state``.

Shape letters: B states in a batch, F the width of the features, K neighbours per point set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from policies.teacher import LabelInputError

TEAM_SET_PREFIX = "team:"
"""Point sets named ``"team:<i>"`` are the alive agents of team ``i``, from ``positions`` and ``team_ids``."""


# Privileged features.


@dataclasses.dataclass(frozen=True)
class NearestOffsets:
    """Offsets from each agent to its K nearest points of several point sets of ``World.state()``.

    Point sets are state keys holding (M, D) positions, such as ``"food_positions"`` or
    ``"target_positions"``, and ``"team:<i>"``, the other alive agents of team ``i``. Each
    set contributes its K nearest points by Euclidean distance. A point's features are its
    offset ``point - own position`` passed through ``sign(x) * log1p(|x|)`` and a presence
    flag, which is 0 where the set has fewer than K points. The log transform keeps far
    points distinguishable without a map-size scale. So F = sets * K * (D + 1).

    It needs ``positions`` ((N, D), every agent's position) in the state, and reads
    ``alive`` and ``team_ids`` where present. The native grid worlds and MAgent2 worlds
    adapted by ``sim.from_pettingzoo`` provide them.
    """

    point_sets: tuple[str, ...]
    """State keys or ``"team:<i>"`` names, in feature order."""
    k: int = 4
    """K, the neighbours kept per point set."""
    dims: int = 2
    """D, the number of coordinates of a position."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "point_sets", tuple(self.point_sets))
        if not self.point_sets:
            raise ValueError("NearestOffsets needs at least one point set, got none")
        for name in self.point_sets:
            if not isinstance(name, str) or not name:
                raise ValueError(f"point set names must be non-empty strings, got {name!r}")
            if name.startswith(TEAM_SET_PREFIX) and not name.removeprefix(TEAM_SET_PREFIX).isdigit():
                raise ValueError(f"team point sets must read 'team:<index>', such as 'team:0', got {name!r}")
        for field, value in (("k", self.k), ("dims", self.dims)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NearestOffsets.{field} must be an integer >= 1, got {value!r}")

    @classmethod
    def for_state(cls, state: Mapping[str, np.ndarray], *, k: int = 4) -> NearestOffsets:
        """Choose the point sets of ``state``: every ``*_positions`` key, then every team.

        Raises:
            ValueError: ``state`` has no ``positions`` array.
        """
        positions = _state_array(state, "positions", "NearestOffsets")
        point_sets = [key for key in sorted(state) if key.endswith("_positions")]
        if "team_ids" in state:
            num_teams = int(np.max(state["team_ids"])) + 1 if len(state["team_ids"]) else 1
            point_sets += [f"{TEAM_SET_PREFIX}{team}" for team in range(num_teams)]
        else:
            point_sets.append(f"{TEAM_SET_PREFIX}0")
        return cls(point_sets=tuple(point_sets), k=k, dims=int(positions.shape[1]))

    @property
    def size(self) -> int:
        """F, the number of features per agent."""
        return len(self.point_sets) * self.k * (self.dims + 1)

    def compute(self, rows: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return (B, F) float32 features of the agents in ``rows``.

        Raises:
            LabelInputError: ``state`` lacks an array the point sets need, or an array has
                the wrong shape.
        """
        positions = _state_array(state, "positions", "NearestOffsets").astype(np.float64)
        if positions.ndim != 2 or positions.shape[1] != self.dims:
            raise LabelInputError(
                f"NearestOffsets: state['positions'] must have shape (N, {self.dims}), got {positions.shape}"
            )
        rows = np.asarray(rows, dtype=np.int64)
        own = positions[rows]  # (B, D)
        alive = np.asarray(state["alive"], dtype=bool) if "alive" in state else np.ones(len(positions), bool)
        blocks = [self._nearest(self._points(name, state, positions, alive), own, rows) for name in self.point_sets]
        return np.concatenate(blocks, axis=1).astype(np.float32)  # (B, F)

    def _points(
        self, name: str, state: Mapping[str, np.ndarray], positions: np.ndarray, alive: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the (M, D) points of set ``name`` and, for agent sets, their (M,) rows."""
        if name.startswith(TEAM_SET_PREFIX):
            team = int(name.removeprefix(TEAM_SET_PREFIX))
            team_ids = np.asarray(state["team_ids"]) if "team_ids" in state else np.zeros(len(positions), int)
            members = np.flatnonzero(alive & (team_ids == team))
            return positions[members], members
        points = _state_array(state, name, "NearestOffsets").astype(np.float64)
        if points.ndim != 2 or points.shape[1] != self.dims:
            raise LabelInputError(f"NearestOffsets: state[{name!r}] must have shape (M, {self.dims}), got {points.shape}")
        return points, None

    def _nearest(
        self, points_and_rows: tuple[np.ndarray, np.ndarray | None], own: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Return (B, K * (D + 1)) offsets and presence flags of the K nearest points, the agent itself excluded."""
        points, point_rows = points_and_rows
        batch = own.shape[0]
        features = np.zeros((batch, self.k, self.dims + 1), dtype=np.float64)  # (B, K, D + 1)
        if len(points) == 0 or batch == 0:
            return features.reshape(batch, -1)

        # Query one extra neighbour of agent sets, because an agent finds itself at distance 0.
        extra = 1 if point_rows is not None else 0
        count = min(self.k + extra, len(points))
        _, index = cKDTree(points).query(own, k=count)
        index = index.reshape(batch, count)  # (B, count)
        if point_rows is not None:
            is_self = point_rows[index] == rows[:, None]  # (B, count)
            # A stable sort moves the agent's own entry last and keeps the others in distance order.
            index = np.take_along_axis(index, np.argsort(is_self, axis=1, kind="stable"), axis=1)
            present = np.sort(is_self, axis=1, kind="stable")[:, : self.k] == 0
            index = index[:, : self.k]
        else:
            present = np.ones(index.shape, dtype=bool)

        offsets = points[index] - own[:, None, :]  # (B, K', D)
        kept = index.shape[1]
        features[:, :kept, : self.dims] = np.sign(offsets) * np.log1p(np.abs(offsets)) * present[..., None]
        features[:, :kept, self.dims] = present
        return features.reshape(batch, -1)

    def to_dict(self) -> dict[str, Any]:
        """Return the feature spec as JSON-ready plain data, as checkpoints store it."""
        return {"kind": "nearest_offsets", "point_sets": list(self.point_sets), "k": self.k, "dims": self.dims}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NearestOffsets:
        """Build the spec from ``to_dict`` output.

        Raises:
            ValueError: an unknown kind or keys.
        """
        data = dict(data)
        kind = data.pop("kind", None)
        if kind != "nearest_offsets":
            raise ValueError(f"unknown privileged feature kind {kind!r}; this shepherd knows 'nearest_offsets'")
        unknown = sorted(set(data) - {"point_sets", "k", "dims"})
        if unknown:
            raise ValueError(f"unknown NearestOffsets key(s) {', '.join(unknown)}; valid keys: dims, k, point_sets")
        return cls(**data)


def _state_array(state: Mapping[str, np.ndarray], key: str, owner: str) -> np.ndarray:
    if key not in state:
        raise LabelInputError(
            f"{owner}: the world state has no {key!r} array; its keys are {sorted(state)}. "
            "Choose point sets the world's state() provides"
        )
    return np.asarray(state[key])
