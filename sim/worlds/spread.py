"""spread_v0: a coordination world where agents must cover targets without crowding.

Targets sit on fixed random cells for the whole episode. Agents are bodies: with
``exclusive_cells`` (the default) no two agents share a cell, a move into a cell that
another agent keeps or also enters fails, and the agents whose moves failed pay
``collision_penalty`` (a bump). Without it agents may stack, and every agent that shares
its cell pays the penalty instead. After every move, an agent alone on a target cell
earns +1, and every agent also earns ``coverage_weight`` times the fraction of targets
covered. Heading for the nearest target is not enough: a good policy must leave a target
to whoever reaches it first and spread over the rest.

Students see a ``V x V`` window with channels ``wall``, ``agents`` (other agents per
cell) and ``targets``. Teachers read ``state()``: every agent's position and every
target's position.
"""

from __future__ import annotations

import numpy as np

from sim.world import Step
from sim.worlds.grid import GridWorld, require_int, require_number


class SpreadWorld(GridWorld):
    """Agents spread over targets on a large grid.

    Args:
        seed: seeds the generator that the first ``reset()`` without a seed uses.
        num_agents: number of agents (one team, ``"agent"``).
        map_size: side of the square map; ``None`` sizes it to about 20 cells per agent.
        view_radius: the observation window is ``2 * view_radius + 1`` cells wide.
        max_steps: episode length in steps.
        num_targets: targets on distinct cells; ``None`` means one per agent.
        collision_penalty: paid by every agent whose move another agent blocked, or, without
            ``exclusive_cells``, by every agent that shares its cell.
        coverage_weight: weight of the covered fraction of targets in every agent's reward.
        exclusive_cells: at most one agent per cell. Stacked agents see identical
            observations, so without this a deterministic local policy can never separate them.
    """

    name = "spread_v0"
    channel_names = ("wall", "agents", "targets")
    team_names = ("agent",)

    def __init__(
        self,
        *,
        num_agents: int,
        seed: int | None = None,
        map_size: int | None = None,
        view_radius: int = 3,
        max_steps: int = 100,
        num_targets: int | None = None,
        collision_penalty: float = 0.5,
        coverage_weight: float = 0.0,
        exclusive_cells: bool = True,
    ) -> None:
        super().__init__(seed)
        self._init_grid(
            num_agents=num_agents,
            map_size=map_size,
            view_radius=view_radius,
            max_steps=max_steps,
            density=1 / 20,
        )
        if num_targets is None:
            num_targets = self.num_agents
        self.num_targets = require_int("num_targets", num_targets, minimum=1, world=self.name)
        cells = self.height * self.width
        if self.num_targets > cells:
            raise ValueError(
                f"{self.name}: num_targets={self.num_targets} does not fit the {cells} cells "
                "of the map; lower num_targets or raise map_size"
            )
        self.collision_penalty = require_number(
            "collision_penalty", collision_penalty, minimum=0.0, world=self.name
        )
        self.coverage_weight = require_number(
            "coverage_weight", coverage_weight, minimum=0.0, world=self.name
        )
        if not isinstance(exclusive_cells, bool):
            raise TypeError(f"{self.name}: exclusive_cells must be true or false, got {exclusive_cells!r}")
        self.exclusive_cells = exclusive_cells
        self.team_ids = np.zeros(self.num_agents, dtype=np.int8)
        self.target_pos = np.zeros((self.num_targets, 2), dtype=np.int64)
        self._target_grid = np.zeros((self.height, self.width), dtype=np.float32)
        self._coverage = 0.0

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        self.pos[:] = self.spawn_cells(rng, self.num_agents)
        self._alive[:] = True
        self.target_pos[:] = self.spawn_cells(rng, self.num_targets)
        self._target_grid[:] = 0.0
        self._target_grid[self.target_pos[:, 0], self.target_pos[:, 1]] = 1.0
        self.interior[..., 2] = self._target_grid
        agent_counts = self.count_map(self.pos)
        self._coverage = self._covered_fraction(agent_counts)
        self.interior[..., 1] = agent_counts
        return self._observe()

    def _step(self, actions: np.ndarray) -> Step:
        if self.exclusive_cells:
            bumped = self.move_exclusive(actions, self._rng)
        else:
            self.move(actions)

        # Score: alone on a target pays, a bump or a shared cell costs, coverage is shared by all.
        agent_counts = self.count_map(self.pos)
        here = agent_counts[self.pos[:, 0], self.pos[:, 1]]  # (N,) agents on each one's cell
        on_target = self._target_grid[self.pos[:, 0], self.pos[:, 1]] > 0
        reward = np.where(on_target & (here == 1), 1.0, 0.0).astype(np.float32)
        penalised = bumped if self.exclusive_cells else here > 1
        reward[penalised] -= self.collision_penalty
        self._coverage = self._covered_fraction(agent_counts)
        reward += self.coverage_weight * self._coverage

        self.interior[..., 1] = agent_counts
        none = np.zeros(self.num_agents, dtype=bool)
        return Step(self._observe(), reward, none, none.copy(), self._alive)

    def _covered_fraction(self, agent_counts: np.ndarray) -> float:
        covered = agent_counts[self.target_pos[:, 0], self.target_pos[:, 1]] > 0
        return float(covered.mean())

    def _observe(self) -> np.ndarray:
        obs = super()._observe()
        # The agents channel counts the others: remove each agent from its own cell.
        r = self.view_radius
        obs[:, r, r, 1] -= 1.0
        return obs

    def state(self) -> dict[str, np.ndarray]:
        state = self._base_state()
        state["target_positions"] = self.target_pos.copy()
        return state

    def metrics(self) -> dict[str, float]:
        return {"coverage": self._coverage}
