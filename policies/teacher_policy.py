"""Drive a population with a teacher: a ``sim.rollout`` policy that acts on the teacher's labels.

``TeacherPolicySpec`` crosses process boundaries like any policy spec; each rollout worker
builds the teacher once per world from its ``TeacherSpec``. Every ``act`` labels the
alive agents with one ``LabelRequest`` (their observations, their rows, ``world.state()``
and the action mask) and takes the most probable action or samples one.

Shape letters: B agent rows in one call (one world's N), A actions, O observation shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from policies.teacher import Labels, LabelRequest, Teacher, TeacherSpec
from sim.rollout.policy import NO_ACTION
from sim.world import World

MODES = ("greedy", "sample")
"""Action choice rules of a ``TeacherPolicy``: the argmax of the probabilities, or a draw from them."""


@dataclasses.dataclass(frozen=True)
class TeacherPolicySpec:
    """A teacher as a rollout policy, reproducible from ``seed`` and the world's seed.

    Example:
        >>> from policies.planners import PlannerSpec
        >>> from sim.rollout import WorldSpec, make_backend, split_population
        >>> world = WorldSpec("spread_v0", num_agents=8, seed=0)
        >>> policy = TeacherPolicySpec(PlannerSpec.from_world_spec(world, depth=2))
        >>> with make_backend("serial", split_population(world, total_agents=8, num_workers=1), policy) as backend:
        ...     backend.run(3).agent_steps
        24
    """

    teacher: TeacherSpec
    """Recipe of the teacher, built once per world inside the worker."""
    mode: str = "greedy"
    """``"greedy"`` takes the most probable action, the first one on ties, and ``"sample"`` draws one."""
    seed: int = 0
    """Base seed of the draws in ``"sample"`` mode, mixed with the per-world seed."""

    def __post_init__(self) -> None:
        if not callable(getattr(self.teacher, "build", None)):
            raise TypeError(
                f"teacher must be a TeacherSpec, an object with build() -> Teacher, got {type(self.teacher).__name__}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def build(self, world: World, *, seed: int) -> TeacherPolicy:
        """Build the teacher and the policy that acts on its labels in ``world``.

        Raises:
            TypeError: the spec built something other than a ``Teacher``.
            ValueError: the teacher's action count differs from the world's.
        """
        teacher = self.teacher.build()
        if not isinstance(teacher, Teacher):
            raise TypeError(f"{type(self.teacher).__name__}.build() must return a Teacher, got {type(teacher).__name__}")
        if teacher.num_actions != world.num_actions:
            raise ValueError(
                f"teacher {teacher.teacher_id} labels {teacher.num_actions} actions but world {world.name} "
                f"has {world.num_actions}; build the teacher for this world"
            )
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, seed]))
        return TeacherPolicy(teacher, world=world, mode=self.mode, rng=rng)


class TeacherPolicy:
    """A batched policy that acts in one world on a teacher's labels, built by ``TeacherPolicySpec``."""

    def __init__(self, teacher: Teacher, *, world: World, mode: str, rng: np.random.Generator) -> None:
        self.teacher = teacher
        self.world = world
        self.mode = mode
        self._rng = rng
        self.last_labels: Labels | None = None
        """Labels of the latest ``act`` call, or ``None`` before the first (or when no agent was alive)."""

    def act(self, obs: np.ndarray, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 actions from the teacher's labels of the alive rows, ``NO_ACTION`` elsewhere.

        Raises:
            ValueError: ``alive`` is not a (B,) bool array.
            policies.teacher.LabelInputError: the teacher rejects the request.
            policies.teacher.LabelError: the teacher returned invalid probabilities.
        """
        alive = np.asarray(alive)
        batch = np.shape(obs)[0]
        if alive.shape != (batch,) or alive.dtype != bool:
            raise ValueError(f"alive must be a bool array of shape ({batch},), got {alive.dtype} {alive.shape}")
        actions = np.full(batch, NO_ACTION, dtype=np.int64)  # (B,)
        rows = np.flatnonzero(alive)
        self.last_labels = None
        if not rows.size:
            return actions

        request = LabelRequest(
            obs=np.asarray(obs)[rows],
            rows=rows.astype(np.int64),
            state=self.world.state(),
            action_mask=None if action_mask is None else action_mask[rows],
        )
        labels = self.teacher.label(request)
        self.last_labels = labels
        actions[rows] = self._choose(labels.probs)
        return actions

    def _choose(self, probs: np.ndarray) -> np.ndarray:
        if self.mode == "greedy":
            return probs.argmax(axis=1)
        # Inverse-CDF draw per row. Scaling the draw by the row's total keeps float32
        # rounding from pointing past the last action, and zero-probability actions
        # never hold the first cumulative value above the draw.
        cumulative = np.cumsum(probs, axis=1, dtype=np.float64)  # (B, A)
        draws = self._rng.random(probs.shape[0]) * cumulative[:, -1]  # (B,)
        return (cumulative > draws[:, None]).argmax(axis=1)

    def describe(self) -> dict[str, Any]:
        """Return the teacher's identity and measured cost, for summaries."""
        return {"mode": self.mode, **self.teacher.describe()}
