"""The neural teacher: a large network loaded from a checkpoint.

``NeuralTeacher`` labels states with any ``PolicyNetwork`` saved by ``save_checkpoint``
(safetensors plus JSON, never pickle), on the CPU or a GPU. ``label_many`` joins every
request into one forward pass, so the default teacher, a 2048-wide MLP of about 8M
parameters, spends its time in large matrix products.

A teacher may also read privileged input (``policies.features``), which the network takes
as its extra input; such a teacher sets ``requires_state``. ``policies.training`` makes
neural teachers from any other teacher's labels.

Shape letters: B states in a batch, A actions, O the observation shape, F the width of
the privileged features.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping

import numpy as np
import torch

from policies.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
from policies.features import NearestOffsets
from policies.networks import (
    NetworkConfig,
    PolicyNetwork,
    count_params,
    flops_per_decision,
    mask_logits,
)
from policies.teacher import LabelRequest, Teacher

logger = logging.getLogger(__name__)


# The teacher.


class NeuralTeacher(Teacher):
    """A teacher that labels with a ``PolicyNetwork``: softmax of its masked logits over ``temperature``.

    Args:
        module: the network.
        teacher_id: identity stored with every label.
        version: version stored with every label.
        features: privileged features the network takes as its extra input, or ``None``.
        temperature: divides the logits before the softmax; above 1 softens the labels.
        device: where the network runs, such as ``"cpu"`` or ``"cuda"``.
    """

    def __init__(
        self,
        module: PolicyNetwork,
        *,
        teacher_id: str,
        version: str,
        features: NearestOffsets | None = None,
        temperature: float = 1.0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        config = module.config
        if config.extra_input_size and features is None:
            raise ValueError(
                f"{teacher_id}: the network takes an extra input of width {config.extra_input_size}, "
                "but no privileged features were given"
            )
        if features is not None and features.size != config.extra_input_size:
            raise ValueError(
                f"{teacher_id}: the privileged features have width {features.size}, but the network "
                f"takes an extra input of width {config.extra_input_size}"
            )
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"{teacher_id}: temperature must be a finite number > 0, got {temperature!r}")
        self.teacher_id = teacher_id
        self.version = version
        self.num_actions = config.num_actions
        self.observation_shape = config.input_shape
        self.requires_state = features is not None
        self.aux_shapes = config.aux_shapes
        self.features = features
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu", temperature: float = 1.0
    ) -> NeuralTeacher:
        """Load a teacher checkpoint, as ``make_neural_teacher`` writes it.

        The checkpoint's metadata may hold ``teacher_id`` (default ``"neural/<stem>"``),
        ``version`` (default: the first 12 hex digits of the weights' sha256) and
        ``privileged_features`` (a ``NearestOffsets.to_dict()``).

        Raises:
            CheckpointError: the checkpoint is invalid, or its features do not fit the network.
        """
        module, config, metadata = load_checkpoint(path, device=device, expected_kind="teacher")
        extra = dict(metadata.extra)
        features = None
        if extra.get("privileged_features") is not None:
            try:
                features = NearestOffsets.from_dict(extra["privileged_features"])
            except (TypeError, ValueError) as error:
                raise CheckpointError(f"{path}: invalid privileged_features in the metadata: {error}") from None
        stem = checkpoint_paths(path)[0].stem
        try:
            return cls(
                module,
                teacher_id=str(extra.get("teacher_id", f"neural/{stem}")),
                version=str(extra.get("version", metadata.weights_sha256[:12])),
                features=features,
                temperature=temperature,
                device=device,
            )
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None

    @property
    def config(self) -> NetworkConfig:
        """The network's architecture."""
        return self.module.config

    def flops_per_label(self) -> float:
        """Floating-point operations of one label, counted analytically (privileged features excluded)."""
        return float(flops_per_decision(self.config))

    def param_count(self) -> int:
        """Number of network parameters."""
        return count_params(self.module)

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        return self._label_many([request])[0]

    def _label_many(
        self, requests: list[LabelRequest]
    ) -> list[tuple[np.ndarray, Mapping[str, np.ndarray]]]:
        # Join every request into one batch, so one forward pass labels them all.
        sizes = [request.size for request in requests]
        obs = requests[0].obs if len(requests) == 1 else np.concatenate([r.obs for r in requests])  # (B, *O)
        extra = None
        if self.features is not None:
            extra = np.concatenate([self.features.compute(r.rows, r.state) for r in requests])  # (B, F)
        mask = None
        if any(request.action_mask is not None for request in requests):
            mask = np.concatenate([_mask_or_all(request, self.num_actions) for request in requests])  # (B, A)

        with torch.inference_mode():
            logits, aux = self.module(
                _to_device(obs, self.device), None if extra is None else _to_device(extra, self.device)
            )
            if mask is not None:
                logits = mask_logits(logits, _to_device(mask, self.device))
            probs = torch.softmax(logits / self.temperature, dim=1).cpu().numpy()  # (B, A)
            aux = {name: value.cpu().numpy() for name, value in aux.items()}

        results = []
        bounds = np.cumsum([0, *sizes])
        for start, stop in zip(bounds[:-1], bounds[1:]):
            results.append((probs[start:stop], {name: value[start:stop] for name, value in aux.items()}))
        return results


@dataclasses.dataclass(frozen=True)
class NeuralTeacherSpec:
    """A picklable recipe for a ``NeuralTeacher``: a checkpoint path, a device and a temperature."""

    path: str
    """The checkpoint stem, or either of its file names."""
    device: str = "cpu"
    """``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``; CUDA is used only when asked for."""
    temperature: float = 1.0
    """Divides the logits before the softmax."""

    def build(self) -> NeuralTeacher:
        """Load the teacher.

        Raises:
            RuntimeError: ``device`` is a CUDA device but ``torch.cuda.is_available()`` is false.
            CheckpointError: the checkpoint is invalid.
        """
        # NOTE: the CUDA path has only run on machines without a GPU, where it raises below.
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"NeuralTeacherSpec requests device {self.device!r}, but torch.cuda.is_available() is "
                "False on this machine; use device='cpu'"
            )
        return NeuralTeacher.from_checkpoint(os.fspath(self.path), device=self.device, temperature=self.temperature)


def _mask_or_all(request: LabelRequest, num_actions: int) -> np.ndarray:
    if request.action_mask is not None:
        return request.action_mask
    return np.ones((request.size, num_actions), dtype=bool)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)
