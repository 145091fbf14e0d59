"""Students: small torch policies that act for a whole world's agents in one batched call.

A ``Student`` wraps a ``PolicyNetwork`` and satisfies the ``sim.rollout`` ``BatchedPolicy``
protocol. A ``StudentPolicySpec`` carries its config and weights to rollout workers, which
build one student per world. After each update, ``RolloutBackend.set_weights`` sends the
new weights once, and each student copies them into its network in place.

Students leave torch's thread count to the caller: a rollout worker process sets it once,
for example with ``torch.set_num_threads(1)`` when several workers share a machine.

Shape letters: B agent rows in one call, A actions, O the observation shape.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.torch
import torch

from policies.checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from policies.networks import (
    NetworkConfig,
    PolicyNetwork,
    build_network,
    count_params,
    flops_per_decision,
    mask_logits,
)
from sim.rollout.policy import NO_ACTION
from sim.world import World

logger = logging.getLogger(__name__)

Weights = Mapping[str, "np.ndarray | torch.Tensor"] | bytes
"""Network weights: a state dict of numpy arrays or tensors, or safetensors bytes of one."""


class Student:
    """A small policy network that chooses actions for a batch of agent rows.

    Args:
        module: the network, built from a config without an extra input.
        sample: draw actions from the softmax of the logits instead of taking the argmax.
        temperature: divides the logits before sampling; ignored by argmax.
        rng: the generator of sampled actions. Required when ``sample`` is true.
        device: where the network runs, such as ``"cpu"`` or ``"cuda"``.

    Example:
        >>> from policies.networks import NetworkConfig, build_network
        >>> student = Student(build_network(NetworkConfig(input_shape=(4,), num_actions=3)))
        >>> obs = np.zeros((2, 4), dtype=np.float32)
        >>> student.act(obs, np.array([True, False]), None).tolist()[1]
        -1
    """

    def __init__(
        self,
        module: PolicyNetwork,
        *,
        sample: bool = False,
        temperature: float = 1.0,
        rng: np.random.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(module, PolicyNetwork):
            raise TypeError(f"module must be a PolicyNetwork from build_network, got {type(module).__name__}")
        if module.config.extra_input_size:
            raise ValueError(
                f"a student sees only observations, but its config has extra_input_size="
                f"{module.config.extra_input_size}; use NeuralTeacher for networks with privileged input"
            )
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if sample and rng is None:
            raise ValueError("a sampling student needs rng, a numpy Generator; pass rng=np.random.default_rng(seed)")
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.sample = sample
        self.temperature = float(temperature)
        self._rng = rng

    # Construction.

    @classmethod
    def from_weights(cls, config: NetworkConfig, weights: Weights, **options: Any) -> Student:
        """Build a student from ``config`` and a state dict or safetensors bytes.

        Raises:
            CheckpointError: the weights do not match the config.
        """
        student = cls(build_network(config), **options)
        student.set_weights(weights)
        return student

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **options: Any) -> Student:
        """Load a student checkpoint written by ``Student.save`` or ``save_checkpoint``."""
        module, _, _ = load_checkpoint(path, expected_kind="student")
        return cls(module, **options)

    @property
    def config(self) -> NetworkConfig:
        """The network's architecture."""
        return self.module.config

    @property
    def num_actions(self) -> int:
        """A, the number of actions."""
        return self.config.num_actions

    # BatchedPolicy.

    def act(self, obs: np.ndarray, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 actions for (B, *O) float32 ``obs``; dead rows get ``NO_ACTION``.

        Only alive rows go through the network.

        Raises:
            TypeError: ``obs`` is not float32, or ``alive`` or ``action_mask`` is not bool.
            ValueError: a shape does not match, or an alive row has no legal action.
        """
        check_obs(obs, self.config.input_shape, owner="student")
        batch = obs.shape[0]
        alive = check_alive(alive, batch)
        action_mask = check_action_mask(action_mask, batch, self.num_actions, alive=alive)

        actions = np.full(batch, NO_ACTION, dtype=np.int64)  # (B,)
        rows = None if alive.all() else np.flatnonzero(alive)
        if rows is not None and rows.size == 0:
            return actions
        if rows is not None:
            obs = obs[rows]
            action_mask = None if action_mask is None else action_mask[rows]

        logits = self._masked_logits(obs, action_mask)  # (B', A)
        if self.sample:
            # Gumbel-max: argmax of logits / T plus Gumbel noise draws from softmax(logits / T).
            noise = self._rng.gumbel(size=logits.shape).astype(np.float32)
            chosen = np.argmax(logits.numpy() / self.temperature + noise, axis=1)
        else:
            chosen = logits.argmax(dim=1).numpy()
        if rows is None:
            actions[:] = chosen
        else:
            actions[rows] = chosen
        return actions

    def logits(self, obs: np.ndarray, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Return (B, A) float32 logits; illegal actions get float32's most negative value."""
        check_obs(obs, self.config.input_shape, owner="student")
        action_mask = check_action_mask(action_mask, obs.shape[0], self.num_actions)
        return self._masked_logits(obs, action_mask).numpy()

    def probs(self, obs: np.ndarray, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Return (B, A) float32 action probabilities, the softmax of the logits; illegal actions get 0."""
        check_obs(obs, self.config.input_shape, owner="student")
        action_mask = check_action_mask(action_mask, obs.shape[0], self.num_actions)
        logits = self._masked_logits(obs, action_mask)
        return torch.softmax(logits, dim=1).numpy()

    def _masked_logits(self, obs: np.ndarray, action_mask: np.ndarray | None) -> torch.Tensor:
        """Run the network on validated arrays and return masked (B, A) logits on the CPU."""
        with torch.inference_mode():
            obs_tensor = as_tensor(obs, self.device)
            logits, _ = self.module(obs_tensor, with_aux=False)
            if action_mask is not None:
                logits = mask_logits(logits, as_tensor(action_mask, self.device))
            return logits.float().cpu()

    # Weights.

    def get_weights(self) -> dict[str, np.ndarray]:
        """Return a copy of the weights as float32 numpy arrays, ready for ``set_weights``."""
        return {name: tensor.detach().cpu().numpy().copy() for name, tensor in self.module.state_dict().items()}

    def set_weights(self, weights: Weights) -> None:
        """Copy ``weights`` into the network in place, as ``RolloutWorker.set_weights`` calls it.

        Raises:
            CheckpointError: the weights do not match the config.
            TypeError: ``weights`` is neither a mapping nor bytes.
        """
        state = weights_to_state_dict(weights)
        check_state_dict(state, self.config, source="weights passed to set_weights")
        with torch.no_grad():
            self.module.load_state_dict(state, strict=True)

    def save(self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> None:
        """Save the student as a checkpoint: ``<stem>.safetensors`` and ``<stem>.json``."""
        save_checkpoint(self.module, self.config, path, kind="student", metadata=metadata)

    # Cost.

    def param_count(self) -> int:
        """Number of network parameters."""
        return count_params(self.module)

    def flops_per_decision(self) -> int:
        """Floating-point operations of one decision, counted analytically; acting skips the auxiliary heads."""
        return flops_per_decision(self.config, include_aux=False)


@dataclasses.dataclass(frozen=True, eq=False)
class StudentPolicySpec:
    """A picklable recipe for a ``Student``, sent to rollout workers.

    Each world's student samples with its own generator, seeded from ``seed`` and the
    seed the worker passes to ``build``.
    """

    config: NetworkConfig
    """The network's architecture."""
    weights: Weights
    """A state dict of numpy arrays (or tensors) or safetensors bytes of one."""
    sample: bool = False
    """Draw actions from the softmax instead of taking the argmax."""
    temperature: float = 1.0
    """Divides the logits before sampling."""
    seed: int = 0
    """Base seed of sampled actions, mixed with the per-world seed."""

    def __post_init__(self) -> None:
        if not isinstance(self.config, NetworkConfig):
            raise TypeError(f"config must be a NetworkConfig, got {type(self.config).__name__}")
        if not isinstance(self.weights, (Mapping, bytes)):
            raise TypeError(
                f"weights must be a state dict of arrays or safetensors bytes, got {type(self.weights).__name__}"
            )

    @classmethod
    def from_student(cls, student: Student, **options: Any) -> StudentPolicySpec:
        """Return a spec with ``student``'s config and a copy of its weights as numpy arrays."""
        return cls(config=student.config, weights=student.get_weights(), **options)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **options: Any) -> StudentPolicySpec:
        """Return a spec with the config and weights of the student checkpoint at ``path``."""
        module, config, _ = load_checkpoint(path, expected_kind="student")
        return cls(config=config, weights=Student(module).get_weights(), **options)

    def build(self, world: World, *, seed: int) -> Student:
        """Build the student for ``world``.

        Raises:
            ValueError: the world's observation shape or action count differs from the config.
        """
        if tuple(world.observation_shape) != self.config.input_shape or world.num_actions != self.config.num_actions:
            raise ValueError(
                f"{world.name}: the student takes observations {self.config.input_shape} and "
                f"{self.config.num_actions} actions, but the world has {tuple(world.observation_shape)} and "
                f"{world.num_actions}; build the student config from the world's observation_shape and num_actions"
            )
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, seed]))
        return Student.from_weights(
            self.config, self.weights, sample=self.sample, temperature=self.temperature, rng=rng
        )


def weights_to_state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    """Return ``weights`` (a state dict of arrays or tensors, or safetensors bytes) as CPU tensors.

    Raises:
        CheckpointError: the bytes are not safetensors, or are a pickle.
        TypeError: ``weights`` has another type.
    """
    if isinstance(weights, bytes):
        if weights.startswith((b"\x80", b"PK\x03\x04")):
            raise CheckpointError(
                "weights bytes are a pickle (torch.save or pickle output), and shepherd never unpickles; "
                "send safetensors.torch.save(state_dict) bytes or a dict of numpy arrays"
            )
        try:
            return safetensors.torch.load(weights)
        except safetensors.SafetensorError as error:
            raise CheckpointError(f"weights bytes are not a valid safetensors buffer: {error}") from None
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weights must be a state dict of arrays or safetensors bytes, got {type(weights).__name__}"
        )
    state = {}
    for name, value in weights.items():
        if isinstance(value, np.ndarray):
            # Ray hands out read-only arrays; np.require copies those so torch may share memory.
            value = torch.from_numpy(np.require(value, requirements=["C", "W"]))
        elif not isinstance(value, torch.Tensor):
            raise TypeError(f"weights[{name!r}] must be a numpy array or tensor, got {type(value).__name__}")
        state[name] = value
    return state


def check_obs(obs: Any, input_shape: tuple[int, ...], *, owner: str) -> None:
    """Raise unless ``obs`` is a float32 numpy array of shape (B, *input_shape).

    Raises:
        TypeError: ``obs`` is not a numpy array, or not float32.
        ValueError: its shape is not (B, *input_shape).
    """
    if not isinstance(obs, np.ndarray):
        raise TypeError(f"{owner}: obs must be a numpy array, got {type(obs).__name__}")
    if obs.dtype != np.float32:
        raise TypeError(f"{owner}: obs must be float32, got {obs.dtype}; convert with obs.astype(np.float32)")
    if obs.shape[1:] != tuple(input_shape) or obs.ndim != len(input_shape) + 1:
        expected = ", ".join(map(str, ("B", *input_shape)))
        raise ValueError(f"{owner}: obs must have shape ({expected}), got {obs.shape}")


def check_action_mask(
    action_mask: Any, batch: int, num_actions: int, *, alive: np.ndarray | None = None
) -> np.ndarray | None:
    """Return ``action_mask`` after checking its shape and dtype and that each (alive) row allows an action.

    Raises:
        TypeError: the mask is not a bool numpy array.
        ValueError: its shape is not (B, A), or a row (among ``alive`` rows) allows no action.
    """
    if action_mask is None:
        return None
    if not isinstance(action_mask, np.ndarray) or action_mask.dtype != bool:
        kind = action_mask.dtype if isinstance(action_mask, np.ndarray) else type(action_mask).__name__
        raise TypeError(f"action_mask must be a bool numpy array, got {kind}")
    if action_mask.shape != (batch, num_actions):
        raise ValueError(f"action_mask must have shape ({batch}, {num_actions}), got {action_mask.shape}")
    empty = ~action_mask.any(axis=1)
    if alive is not None:
        empty &= alive
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise ValueError(f"action_mask row {row} allows no action; every acting row needs a legal action")
    return action_mask


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Return ``array`` as a tensor on ``device``, sharing memory on the CPU where numpy allows it."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device, non_blocking=True)


def check_alive(alive: Any, batch: int) -> np.ndarray:
    """Return ``alive`` after checking that it is a (B,) bool numpy array."""
    if not isinstance(alive, np.ndarray) or alive.dtype != bool:
        kind = alive.dtype if isinstance(alive, np.ndarray) else type(alive).__name__
        raise TypeError(f"alive must be a bool numpy array, got {kind}")
    if alive.shape != (batch,):
        raise ValueError(f"alive must have shape ({batch},), one entry per obs row, got {alive.shape}")
    return alive
