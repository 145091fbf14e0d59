"""predator_prey_v0: a competitive world of two teams, predators and prey.

All agents move at once. Afterwards, a prey is captured when at least
``capture_predators`` predators stand within ``capture_radius`` cells of it (Chebyshev
distance). Each capture pays +1 split evenly among those predators and -1 to the prey;
a prey alive after the step earns ``survival_reward``. A captured prey dies
(``terminated``) and, unless ``respawn_delay`` is ``None``, comes back at a random cell
that many steps later as a new life. Without respawning, the episode ends for everyone
once no prey is left.

Students see a ``V x V`` window with channels ``wall``, ``predators``, ``prey`` (agents
per cell, the observer excluded) and ``is_predator`` (1 everywhere for a predator's own
view), so one network can play either side. Teachers read ``state()``: every agent's
position, team and respawn countdown.
"""

from __future__ import annotations

import math

import numpy as np

from sim.world import Step
from sim.worlds.grid import GridWorld, require_int, require_number

PREDATOR, PREY = 0, 1


class PredatorPreyWorld(GridWorld):
    """Predators hunt prey on a large grid; prey die and respawn.

    Args:
        seed: seeds the generator that the first ``reset()`` without a seed uses.
        num_agents: predators plus prey.
        map_size: side of the square map; ``None`` sizes it to about 20 cells per agent.
        view_radius: the observation window is ``2 * view_radius + 1`` cells wide.
        max_steps: episode length in steps.
        num_predators: size of the predator team; ``None`` means ``num_agents // 4``
            (at least 1). The rest are prey; both teams need at least one agent.
        capture_radius: Chebyshev distance within which predators catch a prey.
        capture_predators: predators needed within ``capture_radius`` to catch a prey.
        respawn_delay: steps a captured prey stays dead; ``None`` disables respawning.
        survival_reward: reward of each prey for every step it survives.
    """

    name = "predator_prey_v0"
    channel_names = ("wall", "predators", "prey", "is_predator")
    team_names = ("predator", "prey")

    def __init__(
        self,
        *,
        num_agents: int,
        seed: int | None = None,
        map_size: int | None = None,
        view_radius: int = 3,
        max_steps: int = 200,
        num_predators: int | None = None,
        capture_radius: int = 1,
        capture_predators: int = 1,
        respawn_delay: int | None = 10,
        survival_reward: float = 0.01,
    ) -> None:
        super().__init__(seed)
        self._init_grid(
            num_agents=num_agents,
            map_size=map_size,
            view_radius=view_radius,
            max_steps=max_steps,
            density=1 / 20,
        )
        if num_predators is None:
            num_predators = max(1, self.num_agents // 4)
        self.num_predators = require_int("num_predators", num_predators, minimum=1, world=self.name)
        if self.num_predators >= self.num_agents:
            raise ValueError(
                f"{self.name}: num_predators={self.num_predators} leaves no prey among "
                f"num_agents={self.num_agents}; use num_predators < num_agents"
            )
        self.num_prey = self.num_agents - self.num_predators
        self.capture_radius = require_int("capture_radius", capture_radius, minimum=0, world=self.name)
        self.capture_predators = require_int(
            "capture_predators", capture_predators, minimum=1, world=self.name
        )
        self.respawn_delay = (
            None
            if respawn_delay is None
            else require_int("respawn_delay", respawn_delay, minimum=1, world=self.name)
        )
        self.survival_reward = require_number(
            "survival_reward", survival_reward, minimum=-math.inf, world=self.name
        )

        self.team_ids = np.full(self.num_agents, PREY, dtype=np.int8)
        self.team_ids[: self.num_predators] = PREDATOR
        self._is_predator = self.team_ids == PREDATOR
        self._is_prey = ~self._is_predator
        self.respawn_timer = np.zeros(self.num_agents, dtype=np.int64)
        self._captures = 0

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        self.pos[:] = self.spawn_cells(rng, self.num_agents)
        self._alive[:] = True
        self.respawn_timer[:] = 0
        self._captures = 0
        self._paint()
        return self._observe()

    def _step(self, actions: np.ndarray) -> Step:
        self.move(actions)
        reward = np.zeros(self.num_agents, dtype=np.float32)
        terminated = np.zeros(self.num_agents, dtype=bool)

        # Capture: count predators around every alive prey.
        hunters = self._alive & self._is_predator
        predator_counts = self.count_map(self.pos[hunters])
        prey_rows = np.flatnonzero(self._alive & self._is_prey)
        nearby = self.window_sum(predator_counts, self.pos[prey_rows], self.capture_radius)
        caught = prey_rows[nearby >= self.capture_predators]
        credit = np.zeros((self.height, self.width), dtype=np.float32)
        np.add.at(credit, (self.pos[caught, 0], self.pos[caught, 1]),
                  1.0 / nearby[nearby >= self.capture_predators])

        # Rewards: predators share each capture; prey pay for it or earn survival.
        predator_rows = np.flatnonzero(hunters)
        reward[predator_rows] = self.window_sum(credit, self.pos[predator_rows], self.capture_radius)
        reward[prey_rows] = self.survival_reward
        reward[caught] = -1.0
        terminated[caught] = True
        self._alive[caught] = False
        self._captures += caught.size

        # Death and respawn: captured prey wait respawn_delay steps, then reappear.
        if self.respawn_delay is None:
            if not (self._alive & self._is_prey).any():
                terminated[self._alive] = True
                self._alive[:] = False
        else:
            self.respawn_timer[caught] = self.respawn_delay + 1
            waiting = self.respawn_timer > 0
            self.respawn_timer[waiting] -= 1
            reborn = np.flatnonzero(waiting & (self.respawn_timer == 0))
            self.pos[reborn] = self.random_cells(self._rng, reborn.size)
            self._alive[reborn] = True

        self._paint()
        return Step(self._observe(), reward, terminated, np.zeros(self.num_agents, dtype=bool), self._alive)

    def _paint(self) -> None:
        interior = self.interior
        interior[..., 1] = self.count_map(self.pos[self._alive & self._is_predator])
        interior[..., 2] = self.count_map(self.pos[self._alive & self._is_prey])

    def _observe(self) -> np.ndarray:
        obs = super()._observe()
        # Own-team channels count the others: remove each agent from its own cell.
        r = self.view_radius
        alive_predators = self._alive & self._is_predator
        alive_prey = self._alive & self._is_prey
        obs[alive_predators, r, r, 1] -= 1.0
        obs[alive_prey, r, r, 2] -= 1.0
        obs[alive_predators, :, :, 3] = 1.0
        return obs

    def state(self) -> dict[str, np.ndarray]:
        state = self._base_state()
        state["respawn_timer"] = self.respawn_timer.copy()
        return state

    def metrics(self) -> dict[str, float]:
        return {"captures": float(self._captures)}
