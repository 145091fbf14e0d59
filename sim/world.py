"""The batched World interface.

A World contains a whole population of agents as rows of fixed-size numpy arrays. Rows never
move: an agent that dies keeps its row, and the ``alive`` mask marks who acts. Shape
letters used in this package:

    N  agents (rows) in one world
    A  actions per agent
    O  the observation shape, ``World.observation_shape``
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import numpy as np


class WorldError(Exception):
    """Base class of the errors a World raises for invalid use."""


class ActionError(WorldError, ValueError):
    """Actions passed to ``World.step`` have the wrong shape, dtype or range."""


class EpisodeEndedError(WorldError, RuntimeError):
    """``World.step`` was called after the episode ended and before ``reset``."""


class Step(NamedTuple):
    """Result of ``World.step``, which unpacks as ``obs, reward, terminated, truncated, alive``."""

    obs: np.ndarray
    """(N, *O) float32 observations after the step; rows of dead agents are zero."""
    reward: np.ndarray
    """(N,) float32 reward of this step; zero for agents that were already dead."""
    terminated: np.ndarray
    """(N,) bool, true on the step an agent's life ends (death or a terminal world state)."""
    truncated: np.ndarray
    """(N,) bool, true for agents still alive when the episode hits its time limit."""
    alive: np.ndarray
    """(N,) bool, the agents that act on the next step."""


class World(abc.ABC):
    """A batched multi-agent simulator.

    Subclasses set the attributes below in ``__init__`` and implement ``_reset``,
    ``_step`` and ``state``. The public ``reset`` and ``step`` validate input and keep
    the episode bookkeeping, so every world rejects bad actions the same way.

    Contract for actions: ``step`` takes an ``(N,)`` integer array. Entries of rows
    whose agent is dead are ignored, whatever their value (``-1`` is a common filler).
    Entries of alive rows must lie in ``[0, num_actions)`` and, where ``action_mask``
    returns a mask, be legal.

    Determinism: the same seed and the same actions give identical trajectories.
    """

    name: str
    """Versioned world name, for example ``"foraging_v0"``."""
    num_agents: int
    """N, the number of rows."""
    observation_shape: tuple[int, ...]
    """O, the shape of one agent's observation."""
    num_actions: int
    """A, the number of discrete actions."""
    team_names: tuple[str, ...]
    """Names of the teams; ``team_ids`` indexes into it."""
    team_ids: np.ndarray
    """(N,) int8 team index of each row."""
    max_steps: int
    """Episode length: every agent alive at this step is truncated."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(self._check_seed(seed))
        self._alive = np.zeros(0, dtype=bool)
        self._episode_step = 0
        self._episode_over = True
        self._ever_reset = False

    # Public API.

    @property
    def alive(self) -> np.ndarray:
        """(N,) bool mask of the agents that act on the next step (a read-only view)."""
        view = self._alive.view()
        view.flags.writeable = False
        return view

    @property
    def episode_step(self) -> int:
        """Steps taken since the last ``reset``."""
        return self._episode_step

    @property
    def episode_over(self) -> bool:
        """True once no agent is alive or the time limit was hit; ``reset`` clears it."""
        return self._episode_over

    @property
    def agent_names(self) -> tuple[str, ...]:
        """Stable agent names in row order, ``"<team>_<index within team>"``."""
        names = []
        counters = [0] * len(self.team_names)
        for team in self.team_ids.tolist():
            names.append(f"{self.team_names[team]}_{counters[team]}")
            counters[team] += 1
        return tuple(names)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode and return the (N, *O) float32 observations.

        Args:
            seed: reseeds the world's random generator. ``None`` continues the current
                generator, which the constructor seeded, as Gymnasium's ``reset`` does.
        """
        if seed is not None:
            self._rng = np.random.default_rng(self._check_seed(seed))
        obs = self._reset(self._rng)
        self._ever_reset = True
        self._episode_step = 0
        self._episode_over = not self._alive.any()
        return obs

    def step(self, actions: np.ndarray) -> Step:
        """Advance every alive agent by one step.

        Args:
            actions: (N,) integer actions; entries of dead rows are ignored.

        Raises:
            ActionError: the array has the wrong shape or dtype, or an alive agent's
                action is out of range or illegal under ``action_mask``.
            EpisodeEndedError: the episode is over; call ``reset`` first.
        """
        if not self._ever_reset:
            raise EpisodeEndedError(f"{self.name}: call reset() before the first step()")
        if self._episode_over:
            raise EpisodeEndedError(
                f"{self.name}: the episode ended at step {self._episode_step}; "
                "call reset() before step()"
            )
        actions = self._validate_actions(actions)
        self._episode_step += 1
        result = self._step(actions)

        if self._episode_step >= self.max_steps:
            result.truncated[self._alive] = True
            self._alive[:] = False
        self._episode_over = not self._alive.any()
        return result._replace(alive=self._alive.copy())

    def metrics(self) -> dict[str, float]:
        """Scalar measures of the current episode, such as food collected or coverage."""
        return {}

    def action_mask(self) -> np.ndarray | None:
        """(N, A) bool mask of legal actions, or ``None`` when every action is always legal."""
        return None

    @abc.abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Return the privileged global state: what a teacher may read and a student may not.

        Arrays are copies, so a caller may keep them across steps.
        """

    # Subclass hooks.

    @abc.abstractmethod
    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        """Reset the world with ``rng``, set ``self._alive`` and return observations."""

    @abc.abstractmethod
    def _step(self, actions: np.ndarray) -> Step:
        """Apply validated actions and update ``self._alive``.

        ``self._episode_step`` already counts this step. The base class fills in
        truncation at the time limit and the returned ``alive``.
        """

    # Validation.

    @staticmethod
    def _check_seed(seed: Any) -> int | None:
        if seed is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        return int(seed)

    def _validate_actions(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        expected_shape = (self.num_agents,)
        if actions.shape != expected_shape:
            raise ActionError(
                f"{self.name}: actions must have shape {expected_shape} (one per agent row), "
                f"got {actions.shape}"
            )
        if not np.issubdtype(actions.dtype, np.integer):
            raise ActionError(
                f"{self.name}: actions must be an integer array, got dtype {actions.dtype}; "
                "convert with actions.astype(np.int64) after choosing discrete actions"
            )

        alive_actions = actions[self._alive]
        if alive_actions.size:
            low, high = int(alive_actions.min()), int(alive_actions.max())
            if low < 0 or high >= self.num_actions:
                bad_rows = np.flatnonzero(
                    self._alive & ((actions < 0) | (actions >= self.num_actions))
                )
                row = int(bad_rows[0])
                raise ActionError(
                    f"{self.name}: action {int(actions[row])} of alive agent row {row} is out of "
                    f"range [0, {self.num_actions}); {bad_rows.size} alive rows are out of range"
                )

        mask = self.action_mask()
        if mask is not None:
            safe = np.where(self._alive, actions, 0)
            legal = mask[np.arange(self.num_agents), safe] | ~self._alive
            if not legal.all():
                bad_rows = np.flatnonzero(~legal)
                row = int(bad_rows[0])
                raise ActionError(
                    f"{self.name}: action {int(actions[row])} of agent row {row} is illegal under "
                    f"action_mask(); {bad_rows.size} alive rows chose illegal actions"
                )
        # Dead rows become 0 (stay), so subclasses can index tables with every entry.
        return np.where(self._alive, actions, 0).astype(np.int64, copy=False)
