"""A scripted landmark-assignment teacher for MPE2 ``simple_spread_v3``.

Agents are matched one to one with landmarks by ``scipy.optimize.linear_sum_assignment``
on their distances, and each agent takes the action whose predicted resting point lies
closest to its landmark. The resting point is where the agent would stop if it took the
action now and coasted afterwards, so the agent brakes in time instead of overshooting.

Conventions of mpe2 1.1.1, checked by stepping the env against its world's positions:

- Discrete actions: 0 no-op, 1 pushes towards -x, 2 towards +x, 3 towards -y, 4 towards +y.
- ``state()["global"]`` is ``env.state()``: the agents' observations concatenated in
  ``possible_agents`` order (the adapter's rows). Full observability is the default,
  with ``num_agent_neighbors`` and ``num_landmark_neighbors`` unset. Then each of the N
  blocks has 6N numbers: own velocity (2), own position (2), the N landmarks relative to
  the agent (2N), the other agents relative to it (2N - 2) and their communication
  (2N - 2). So ``global`` has 6N² numbers. The teacher reads every agent's position and
  velocity from its block, and the landmarks' absolute positions from block 0.
- Dynamics (``mpe2._mpe_utils.core.World.integrate_state``): each step the position
  moves by ``velocity * dt`` first, then the velocity decays by ``1 - damping`` and
  gains ``action * sensitivity * dt / mass``, with dt = 0.1, damping = 0.25,
  sensitivity = 5 and mass = 1 for spread agents.

Shape letters: B states in a request, N agents (and landmarks), A = 5 actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from policies.scripted.common import ScriptedTeacher, check_positive_int, check_temperature
from policies.teacher import LabelInputError, LabelRequest

SPREAD_NUM_ACTIONS = 5

SPREAD_PUSH = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], dtype=np.float64)
"""(5, 2) direction of the force of actions 0 .. 4."""

SPREAD_NO_OP_ACTION = 0

TIME_STEP = 0.1
DAMPING = 0.25
SENSITIVITY = 5.0
"""Physics constants of mpe2 1.1.1 for ``simple_spread`` agents (mass 1, no max speed)."""


@dataclasses.dataclass(frozen=True)
class ScriptedSpreadSpec:
    """Builds a ``ScriptedSpreadTeacher``."""

    num_agents: int = 3
    """N of the env (``simple_spread_v3.parallel_env(N=...)``); the state must have 6N² numbers."""
    temperature: float = 0.02
    """Softmax temperature over action scores, in distance units of the env (the map is
    about 2 wide, and one action shifts the resting point by 0.2)."""

    def __post_init__(self) -> None:
        check_positive_int(self.num_agents, "num_agents", "ScriptedSpreadSpec")
        check_temperature(self.temperature, "ScriptedSpreadSpec")

    def build(self) -> ScriptedSpreadTeacher:
        """Construct the teacher."""
        return ScriptedSpreadTeacher(self)


class ScriptedSpreadTeacher(ScriptedTeacher):
    """Cover every landmark of MPE2 ``simple_spread_v3`` from the global state.

    Reads ``global`` and ``alive`` from the state. The auxiliary target ``goal`` is the
    offset from the agent to its assigned landmark.
    """

    teacher_id = "scripted/simple_spread_v3"
    version = "1"
    num_actions = SPREAD_NUM_ACTIONS
    aux_shapes = {"goal": (2,)}
    no_op_action = SPREAD_NO_OP_ACTION

    def __init__(self, spec: ScriptedSpreadSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or ScriptedSpreadSpec()
        self.temperature = self.spec.temperature

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        positions, velocities, landmarks = self._read_state(request)  # (N, 2) each
        alive = self.state_array(request, "alive").astype(bool)  # (N,)
        rows = self.rows_of(request, positions.shape[0])

        # Match agents to landmarks, then aim every requested agent at its landmark.
        distance = np.linalg.norm(positions[:, None, :] - landmarks[None, :, :], axis=-1)  # (N, N)
        agents, assigned = linear_sum_assignment(distance)
        landmark_of = np.empty(positions.shape[0], dtype=np.int64)
        landmark_of[agents] = assigned
        goal = landmarks[landmark_of[rows]] - positions[rows]  # (B, 2)

        # Resting point after an action: the next velocity, decaying geometrically, adds
        # next_velocity * dt / damping to the position after this step.
        coast = TIME_STEP / DAMPING
        next_velocity = velocities[rows][:, None, :] * (1 - DAMPING) + SPREAD_PUSH[None] * SENSITIVITY * TIME_STEP
        rest = velocities[rows][:, None, :] * TIME_STEP + next_velocity * coast  # (B, A, 2), relative to the agent
        scores = -np.linalg.norm(rest - goal[:, None, :], axis=-1)  # (B, A)

        probs = self.scores_to_probs(scores, request, acting=alive[rows])
        return probs, {"goal": goal.astype(np.float32)}

    def _read_state(self, request: LabelRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (N, 2) positions, (N, 2) velocities and (N, 2) landmark positions."""
        n = self.spec.num_agents
        flat = self.state_array(request, "global").astype(np.float64).ravel()
        if flat.size != 6 * n * n:
            raise LabelInputError(
                f"{self.teacher_id}: state['global'] has {flat.size} numbers, but simple_spread_v3 "
                f"with {n} agents and full observability has {6 * n * n}; set "
                "ScriptedSpreadSpec(num_agents=...) to the env's N, and leave the env's "
                "num_agent_neighbors and num_landmark_neighbors unset"
            )
        blocks = flat.reshape(n, 6 * n)  # (N, 6N)
        velocities = blocks[:, 0:2]
        positions = blocks[:, 2:4]
        landmarks = positions[0] + blocks[0, 4 : 4 + 2 * n].reshape(n, 2)
        return positions, velocities, landmarks
