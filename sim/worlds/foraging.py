"""foraging_v0: a cooperative world where agents collect food, some of it only together.

Food items have a level from 1 to ``max_food_level``. After every move, a food item is
collected when at least ``level`` agents stand within one cell of it (its 3 x 3
neighbourhood), so heavy food needs several agents at once. Its reward, equal to its
level, is split evenly among those agents, and a new item of a random level appears on a
random empty cell, so the amount of food stays constant.

Students see a ``V x V`` window with channels ``wall``, ``agents`` (other agents per
cell) and ``food`` (level / max level). Teachers read ``state()``: every agent's
position and every food item's position and level.
"""

from __future__ import annotations

import numpy as np

from sim.world import Step
from sim.worlds.grid import GridWorld, require_int, require_number

COLLECT_RADIUS = 1


class ForagingWorld(GridWorld):
    """Cooperative foraging on a large grid with local views.

    Args:
        seed: seeds the generator that the first ``reset()`` without a seed uses.
        num_agents: number of agents (one team, ``"forager"``).
        map_size: side of the square map; ``None`` sizes it to about 20 cells per agent.
        view_radius: the observation window is ``2 * view_radius + 1`` cells wide.
        max_steps: episode length in steps.
        num_food: food items on the map at any time; ``None`` means ``num_agents // 2``
            (at least 1).
        max_food_level: food levels are drawn uniformly from ``1..max_food_level``.
        shared_reward: weight in [0, 1] of the team's mean reward mixed into each
            agent's own reward.
    """

    name = "foraging_v0"
    channel_names = ("wall", "agents", "food")
    team_names = ("forager",)

    def __init__(
        self,
        *,
        num_agents: int,
        seed: int | None = None,
        map_size: int | None = None,
        view_radius: int = 3,
        max_steps: int = 200,
        num_food: int | None = None,
        max_food_level: int = 2,
        shared_reward: float = 0.0,
    ) -> None:
        super().__init__(seed)
        self.max_food_level = require_int("max_food_level", max_food_level, minimum=1, world=self.name)
        self.shared_reward = require_number("shared_reward", shared_reward, minimum=0.0, world=self.name)
        if self.shared_reward > 1.0:
            raise ValueError(f"{self.name}: shared_reward must be in [0, 1], got {shared_reward}")
        if num_food is None:
            requested_food = max(1, require_int("num_agents", num_agents, minimum=1, world=self.name) // 2)
        else:
            requested_food = require_int("num_food", num_food, minimum=1, world=self.name)

        self._init_grid(
            num_agents=num_agents,
            map_size=map_size,
            view_radius=view_radius,
            max_steps=max_steps,
            density=1 / 20,
            reserved_cells=0,
        )
        cells = self.height * self.width
        if requested_food >= cells:
            raise ValueError(
                f"{self.name}: num_food={requested_food} needs fewer items than the "
                f"{cells} cells of the map; lower num_food or raise map_size"
            )
        self.num_food = requested_food
        self.team_ids = np.zeros(self.num_agents, dtype=np.int8)
        self.food_pos = np.zeros((self.num_food, 2), dtype=np.int64)
        self.food_level = np.zeros(self.num_food, dtype=np.int64)
        self._food_grid = np.zeros((self.height, self.width), dtype=np.int64)  # level, 0 = none
        self._food_collected = 0

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        self.pos[:] = self.spawn_cells(rng, self.num_agents)
        self._alive[:] = True
        self.food_pos[:] = self.spawn_cells(rng, self.num_food)
        self.food_level[:] = rng.integers(1, self.max_food_level + 1, size=self.num_food)
        self._food_grid[:] = 0
        self._food_grid[self.food_pos[:, 0], self.food_pos[:, 1]] = self.food_level
        self._food_collected = 0
        self._paint()
        return self._observe()

    def _step(self, actions: np.ndarray) -> Step:
        self.move(actions)

        # Collect: food with enough agents in its neighbourhood pays its level, split evenly.
        agent_counts = self.count_map(self.pos[self._alive])
        helpers = self.window_sum(agent_counts, self.food_pos, COLLECT_RADIUS)  # (F,)
        collected = helpers >= self.food_level
        payout = np.zeros((self.height, self.width), dtype=np.float32)
        cells = self.food_pos[collected]
        payout[cells[:, 0], cells[:, 1]] = self.food_level[collected] / helpers[collected]
        reward = self.window_sum(payout, self.pos, COLLECT_RADIUS).astype(np.float32)
        reward[~self._alive] = 0.0
        if self.shared_reward > 0.0:
            team_mean = reward[self._alive].mean() if self._alive.any() else 0.0
            reward = (1 - self.shared_reward) * reward + self.shared_reward * team_mean
            reward[~self._alive] = 0.0
        self._food_collected += int(collected.sum())

        self._respawn_food(np.flatnonzero(collected))
        self._paint(agent_counts, changed_food=True)
        obs = self._observe()
        none = np.zeros(self.num_agents, dtype=bool)
        return Step(obs, reward.astype(np.float32), none, none.copy(), self._alive)

    def _respawn_food(self, items: np.ndarray) -> None:
        self._cleared_food_cells = self.food_pos[items].copy()
        self._food_grid[self.food_pos[items, 0], self.food_pos[items, 1]] = 0
        pending = items
        while pending.size:
            cells = self.random_cells(self._rng, pending.size)
            flat = self.flat_index(cells)
            _, first = np.unique(flat, return_index=True)
            free = np.zeros(pending.size, dtype=bool)
            free[first] = True
            free &= self._food_grid[cells[:, 0], cells[:, 1]] == 0
            placed = pending[free]
            self.food_pos[placed] = cells[free]
            self.food_level[placed] = self._rng.integers(1, self.max_food_level + 1, size=placed.size)
            self._food_grid[cells[free, 0], cells[free, 1]] = self.food_level[placed]
            pending = pending[~free]

    def _paint(self, agent_counts: np.ndarray | None = None, *, changed_food: bool = False) -> None:
        if agent_counts is None:
            agent_counts = self.count_map(self.pos[self._alive])
        interior = self.interior
        interior[..., 1] = agent_counts
        if changed_food:
            # Only the cells that lost or gained food this step change.
            cleared = self._cleared_food_cells
            interior[cleared[:, 0], cleared[:, 1], 2] = 0.0
            interior[self.food_pos[:, 0], self.food_pos[:, 1], 2] = self.food_level / self.max_food_level
        else:
            interior[..., 2] = self._food_grid / self.max_food_level

    def _observe(self) -> np.ndarray:
        obs = super()._observe()
        # The agents channel counts the others: remove each agent from its own cell.
        r = self.view_radius
        obs[self._alive, r, r, 1] -= 1.0
        return obs

    def state(self) -> dict[str, np.ndarray]:
        state = self._base_state()
        state["food_positions"] = self.food_pos.copy()
        state["food_levels"] = self.food_level.copy()
        return state

    def metrics(self) -> dict[str, float]:
        return {"food_collected": float(self._food_collected)}
