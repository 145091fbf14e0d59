"""ONNX export of students, and a policy that runs the exported file with onnxruntime.

``export_onnx`` writes a graph with two inputs, ``obs`` (B, *O) float32 and
``action_mask`` (B, A) bool, and two outputs, ``logits`` (B, A) float32 with illegal
actions at float32's most negative value and ``action`` (B,) int64, their argmax. The
batch axis B is dynamic. The student's ``NetworkConfig`` travels in the model's metadata
under ``shepherd.network``, so ``OnnxPolicy`` needs no other file.

The export uses torch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``),
because the default torch.export-based exporter of torch 2.9 and later needs the
``onnxscript`` package.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from policies.networks import NetworkConfig, PolicyNetwork, mask_logits
from policies.student import Student, check_action_mask, check_alive, check_obs
from sim.rollout.policy import NO_ACTION
from sim.world import World

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
"""ONNX opset of exported students; onnxruntime 1.16 and later run it."""

CONFIG_METADATA_KEY = "shepherd.network"
"""Key of the JSON ``NetworkConfig`` in an exported model's ``metadata_props``."""

INPUT_NAMES = ("obs", "action_mask")
OUTPUT_NAMES = ("logits", "action")


class _ExportedPolicy(nn.Module):
    """The student's network with the action mask and argmax inside the graph."""

    def __init__(self, module: PolicyNetwork) -> None:
        super().__init__()
        self.module = module

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.module(obs)
        logits = mask_logits(logits, action_mask)  # (B, A)
        return logits, logits.argmax(dim=1)  # (B, A), (B,)


def export_onnx(student: Student, path: str | os.PathLike[str], *, opset: int = ONNX_OPSET) -> Path:
    """Export ``student`` to an ONNX file with a dynamic batch axis and return its path.

    Auxiliary heads are left out of the graph: an exported student only acts.

    Raises:
        TypeError: ``student`` is not a ``Student``.
    """
    # onnx is imported here, as onnxruntime is in OnnxPolicy, so that importing policies
    # stays as fast for rollout workers that never export.
    import onnx

    if not isinstance(student, Student):
        raise TypeError(f"export_onnx takes a Student, got {type(student).__name__}")
    config = student.config
    wrapper = _ExportedPolicy(student.module).to("cpu").eval()
    example = (
        torch.zeros((2, *config.input_shape), dtype=torch.float32),
        torch.ones((2, config.num_actions), dtype=torch.bool),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.9+ marks the TorchScript-based exporter as deprecated; it is still the
        # exporter that works without onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            example,
            buffer,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)},
            opset_version=opset,
        )
    student.module.to(student.device)

    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {CONFIG_METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True)})
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    onnx.save(model, temporary)
    os.replace(temporary, path)
    logger.info("exported student to %s (opset %d)", path, opset)
    return path


class OnnxPolicy:
    """A ``BatchedPolicy`` that runs an exported student with onnxruntime, taking the argmax action.

    Args:
        path: a file written by ``export_onnx``.
        num_threads: onnxruntime's intra-op threads, or ``None`` for its default.

    Raises:
        ValueError: the file has no shepherd network config in its metadata.
    """

    def __init__(self, path: str | os.PathLike[str], *, num_threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        self.path = Path(path)
        self._session = onnxruntime.InferenceSession(
            os.fspath(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        properties = self._session.get_modelmeta().custom_metadata_map
        if CONFIG_METADATA_KEY not in properties:
            raise ValueError(
                f"{self.path} has no {CONFIG_METADATA_KEY!r} metadata; export the student with export_onnx"
            )
        self.config = NetworkConfig.from_dict(json.loads(properties[CONFIG_METADATA_KEY]))

    @property
    def num_actions(self) -> int:
        """A, the number of actions."""
        return self.config.num_actions

    def act(self, obs: np.ndarray, alive: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """Return (B,) int64 argmax actions; dead rows get ``NO_ACTION``. Only alive rows are run.

        Raises:
            TypeError, ValueError: as ``Student.act`` raises them for bad input.
        """
        check_obs(obs, self.config.input_shape, owner="onnx policy")
        alive = check_alive(alive, obs.shape[0])
        action_mask = check_action_mask(action_mask, obs.shape[0], self.num_actions, alive=alive)

        actions = np.full(obs.shape[0], NO_ACTION, dtype=np.int64)  # (B,)
        rows = np.flatnonzero(alive)
        if rows.size == 0:
            return actions
        mask = None if action_mask is None else action_mask[rows]
        _, chosen = self._run(obs[rows], mask)
        actions[rows] = chosen
        return actions

    def logits(self, obs: np.ndarray, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Return (B, A) float32 logits; illegal actions get float32's most negative value."""
        check_obs(obs, self.config.input_shape, owner="onnx policy")
        action_mask = check_action_mask(action_mask, obs.shape[0], self.num_actions)
        logits, _ = self._run(obs, action_mask)
        return logits

    def _run(self, obs: np.ndarray, action_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if action_mask is None:
            action_mask = np.ones((obs.shape[0], self.num_actions), dtype=bool)
        logits, actions = self._session.run(
            list(OUTPUT_NAMES), {"obs": np.ascontiguousarray(obs), "action_mask": action_mask}
        )
        return logits, actions


@dataclasses.dataclass(frozen=True)
class OnnxPolicySpec:
    """A picklable recipe for an ``OnnxPolicy``: the path of an exported student."""

    path: str
    """A file written by ``export_onnx``."""
    num_threads: int | None = None
    """onnxruntime's intra-op threads, or ``None`` for its default."""

    def build(self, world: World, *, seed: int) -> OnnxPolicy:
        """Load the policy for ``world``; ``seed`` is unused because the policy takes the argmax.

        Raises:
            ValueError: the world's observation shape or action count differs from the model's.
        """
        policy = OnnxPolicy(self.path, num_threads=self.num_threads)
        if tuple(world.observation_shape) != policy.config.input_shape or world.num_actions != policy.num_actions:
            raise ValueError(
                f"{world.name}: {self.path} takes observations {policy.config.input_shape} and "
                f"{policy.num_actions} actions, but the world has {tuple(world.observation_shape)} and "
                f"{world.num_actions}"
            )
        return policy
