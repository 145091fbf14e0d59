"""Shared machinery of the native grid worlds: movement, spawning and local views.

Positions are (N, 2) int64 rows of ``[y, x]`` on an ``H x W`` grid. Every observation is
an egocentric ``V x V`` window (``V = 2 * view_radius + 1``) of a padded channel canvas,
channels last, so ``O = (V, V, C)``. Cells outside the map read as walls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.world import World

ACTION_NAMES = ("stay", "up", "down", "left", "right")
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # (A, 2) dy, dx
WALL_CHANNEL = 0


def require_int(name: str, value: Any, *, minimum: int, world: str) -> int:
    """Return ``value`` as an int, or raise naming the option and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{world}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{world}: {name} must be >= {minimum}, got {value}")
    return int(value)


def require_number(name: str, value: Any, *, minimum: float, world: str) -> float:
    """Return ``value`` as a float, or raise naming the option and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{world}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{world}: {name} must be a finite number, got {value}")
    if value < minimum:
        raise ValueError(f"{world}: {name} must be >= {minimum}, got {value}")
    return float(value)


def auto_map_size(num_agents: int, density: float) -> int:
    """Side of the smallest square map with room for ``num_agents`` at ``density`` agents per cell."""
    return max(8, math.ceil(math.sqrt(num_agents / density)))


class GridWorld(World):
    """Base class of the native grid worlds.

    Subclasses call ``_init_grid`` from ``__init__``, then paint their channels onto
    ``self._canvas`` in ``_paint`` and call ``_observe`` to cut out each agent's view.
    """

    channel_names: tuple[str, ...]
    """Names of the observation channels, in order; channel 0 is always ``"wall"``."""

    def _init_grid(
        self,
        *,
        num_agents: Any,
        map_size: Any,
        view_radius: Any,
        max_steps: Any,
        density: float,
        reserved_cells: int = 0,
    ) -> None:
        self.num_agents = require_int("num_agents", num_agents, minimum=1, world=self.name)
        if map_size is None:
            map_size = auto_map_size(self.num_agents + reserved_cells, density)
        self.map_size = require_int("map_size", map_size, minimum=2, world=self.name)
        self.view_radius = require_int("view_radius", view_radius, minimum=0, world=self.name)
        self.max_steps = require_int("max_steps", max_steps, minimum=1, world=self.name)

        capacity = self.map_size * self.map_size - reserved_cells
        if self.num_agents > capacity:
            raise ValueError(
                f"{self.name}: num_agents={self.num_agents} does not fit a "
                f"{self.map_size}x{self.map_size} map, which holds at most {max(capacity, 0)} "
                "agents on distinct cells here; raise map_size or leave it unset to size the "
                "map from num_agents"
            )

        self.height = self.width = self.map_size
        self.num_actions = len(ACTION_NAMES)
        side = 2 * self.view_radius + 1
        num_channels = len(self.channel_names)
        self.observation_shape = (side, side, num_channels)
        self._init_canvas()

        self.pos = np.zeros((self.num_agents, 2), dtype=np.int64)
        self._alive = np.zeros(self.num_agents, dtype=bool)

    def _init_canvas(self) -> None:
        r = self.view_radius
        padded_h, padded_w = self.height + 2 * r, self.width + 2 * r
        num_channels = len(self.channel_names)
        self._canvas = np.zeros((padded_h, padded_w, num_channels), dtype=np.float32)
        self._canvas[..., WALL_CHANNEL] = 1.0
        self._canvas[r : r + self.height, r : r + self.width, WALL_CHANNEL] = 0.0

        # Every V x V window as a strided view: row y, column x * C of the canvas seen as
        # (H + 2r, (W + 2r) * C) starts the window of the agent at (y, x). Indexing it copies
        # V runs of V * C contiguous floats per agent, about twice as fast as gathering
        # V * V cells of C floats each.
        side = 2 * r + 1
        rows = self._canvas.reshape(padded_h, padded_w * num_channels)
        self._windows = np.lib.stride_tricks.sliding_window_view(rows, (side, side * num_channels))
        self._window_buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # radius -> (buffer, offsets)

    @property
    def interior(self) -> np.ndarray:
        """(H, W, C) writable view of the canvas without its wall border."""
        r = self.view_radius
        return self._canvas[r : r + self.height, r : r + self.width]

    def flat_index(self, pos: np.ndarray) -> np.ndarray:
        """Flat cell index ``y * W + x`` of each (y, x) row."""
        return pos[:, 0] * self.width + pos[:, 1]

    def count_map(self, pos: np.ndarray) -> np.ndarray:
        """(H, W) float32 number of rows of ``pos`` on each cell."""
        counts = np.bincount(self.flat_index(pos), minlength=self.height * self.width)
        return counts.reshape(self.height, self.width).astype(np.float32)

    def move(self, actions: np.ndarray) -> None:
        """Move alive agents by their actions; walls at the map edge stop them."""
        delta = MOVES[actions] * self._alive[:, None]  # (N, 2)
        np.add(self.pos, delta, out=self.pos)
        np.clip(self.pos, 0, self.map_size - 1, out=self.pos)

    def move_exclusive(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Move alive agents so that no two share a cell; return (N,) bool of blocked moves.

        A move fails when its target cell is kept by an agent that does not move away. When
        several agents enter the same free cell, one of them, drawn at random, gets in and
        the others stay. Agents may swap cells. Failed moves can free or block
        other moves, so the resolution repeats until no cell holds two agents. Every round
        turns at least one mover into a stayer, so it ends. Assumes no two alive agents
        share a cell before the move.
        """
        proposed = np.clip(self.pos + MOVES[actions], 0, self.map_size - 1)  # (N, 2)
        moving = self._alive & (proposed != self.pos).any(axis=1)
        blocked = np.zeros(self.num_agents, dtype=bool)
        priority = rng.random(self.num_agents)  # (N,) random winner among movers
        rows = np.flatnonzero(self._alive)
        while True:
            going = moving & ~blocked
            final = np.where(going[:, None], proposed, self.pos)[rows]  # (N', 2)
            cells = self.flat_index(final)
            # Stayers keep their cell (priority 2 beats any mover); sort each cell's claims by priority.
            claim = np.where(going[rows], priority[rows], 2.0)
            order = np.lexsort((-claim, cells))
            sorted_cells = cells[order]
            loser = np.zeros(rows.size, dtype=bool)
            loser[order[1:]] = sorted_cells[1:] == sorted_cells[:-1]
            if not loser.any():
                break
            blocked[rows[loser]] = True
        self.pos[going] = proposed[going]
        return blocked

    def spawn_cells(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, 2) distinct random cells."""
        flat = rng.choice(self.height * self.width, size=count, replace=False)
        return np.stack([flat // self.width, flat % self.width], axis=1).astype(np.int64)

    def random_cells(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, 2) random cells, possibly repeated."""
        return rng.integers(0, self.map_size, size=(count, 2), dtype=np.int64)

    def window_sum(self, grid: np.ndarray, pos: np.ndarray, radius: int) -> np.ndarray:
        """Sum of ``grid`` (H, W) over the (2*radius+1)^2 window around each row of ``pos``.

        The grid is copied into a zero-bordered buffer kept per radius, and each window is
        gathered by flat offsets: cheaper than padding a new array on every call.
        """
        if radius not in self._window_buffers:
            padded_w = self.width + 2 * radius
            side = 2 * radius + 1
            dy, dx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
            buffer = np.zeros((self.height + 2 * radius, padded_w), dtype=np.float32)
            self._window_buffers[radius] = (buffer, (dy * padded_w + dx).ravel())
        buffer, offsets = self._window_buffers[radius]
        buffer[radius : radius + self.height, radius : radius + self.width] = grid
        top_left = pos[:, 0] * buffer.shape[1] + pos[:, 1]  # (K,)
        return buffer.ravel()[top_left[:, None] + offsets[None, :]].sum(axis=1)  # (K,)

    def _observe(self) -> np.ndarray:
        """(N, V, V, C) float32 windows of the canvas around each agent; dead rows are zero."""
        num_channels = self._canvas.shape[-1]
        obs = self._windows[self.pos[:, 0], self.pos[:, 1] * num_channels]  # (N, V, V*C)
        obs = obs.reshape(self.num_agents, *self.observation_shape)
        if not self._alive.all():
            obs[~self._alive] = 0.0
        return obs

    def _base_state(self) -> dict[str, np.ndarray]:
        return {
            "positions": self.pos.copy(),
            "alive": self._alive.copy(),
            "team_ids": self.team_ids.copy(),
        }
