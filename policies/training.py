"""Labelled data and training of policy networks, and making a neural teacher from any teacher.

``collect_teacher_labels`` records any teacher's labels along its own rollouts, and
``train_network`` fits a network to labelled arrays. ``make_neural_teacher`` trains and
saves a large network, so every world can have a neural teacher made from a planner or
any other teacher.

Shape letters: N labelled states in a data set, A actions, O the observation shape, F the
width of the privileged features.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from policies.checkpoint import save_checkpoint
from policies.features import NearestOffsets
from policies.networks import (
    DEFAULT_TEACHER_HIDDEN,
    NetworkConfig,
    PolicyNetwork,
    build_network,
    count_params,
    default_teacher_config,
    mask_logits,
)
from policies.neural import NeuralTeacherSpec
from policies.teacher import LabelRequest, Teacher
from sim.world import World

logger = logging.getLogger(__name__)


# Labelled data and training.


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledData:
    """States with a teacher's labels, the training set of a network."""

    obs: np.ndarray
    """(N, *O) float32 observations."""
    probs: np.ndarray
    """(N, A) float32 teacher probabilities; each row sums to one."""
    features: np.ndarray | None = None
    """(N, F) float32 privileged features, or ``None``."""
    action_mask: np.ndarray | None = None
    """(N, A) bool legal actions, or ``None`` when every action is legal."""
    aux: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Auxiliary targets, each (N, ...) float32."""

    def __post_init__(self) -> None:
        for name in ("obs", "probs"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise TypeError(f"LabelledData.{name} must be a float32 numpy array, got {kind}")
        size = self.obs.shape[0] if self.obs.ndim else -1
        if self.probs.ndim != 2 or self.probs.shape[0] != size:
            raise ValueError(f"LabelledData.probs must have shape ({size}, A), got {self.probs.shape}")
        if size and not np.allclose(self.probs.sum(axis=1), 1.0, atol=1e-3):
            row = int(np.flatnonzero(~np.isclose(self.probs.sum(axis=1), 1.0, atol=1e-3))[0])
            raise ValueError(f"LabelledData.probs row {row} sums to {self.probs[row].sum():.4f}, not 1")
        if self.features is not None and (
            self.features.dtype != np.float32 or self.features.ndim != 2 or self.features.shape[0] != size
        ):
            raise ValueError(
                f"LabelledData.features must be float32 of shape ({size}, F), got {self.features.dtype} {self.features.shape}"
            )
        if self.action_mask is not None and (
            self.action_mask.dtype != bool or self.action_mask.shape != self.probs.shape
        ):
            raise ValueError(
                f"LabelledData.action_mask must be bool of shape {self.probs.shape}, "
                f"got {self.action_mask.dtype} {self.action_mask.shape}"
            )
        for name, value in self.aux.items():
            if value.shape[:1] != (size,):
                raise ValueError(f"LabelledData.aux[{name!r}] must have {size} rows, got shape {value.shape}")

    @property
    def size(self) -> int:
        """N, the number of labelled states."""
        return int(self.obs.shape[0])

    @classmethod
    def concatenate(cls, parts: Sequence[LabelledData]) -> LabelledData:
        """Join data sets with the same fields, in order."""
        if not parts:
            raise ValueError("LabelledData.concatenate needs at least one part, got none")
        first = parts[0]

        def join(name: str) -> np.ndarray | None:
            values = [getattr(part, name) for part in parts]
            if all(value is None for value in values):
                return None
            if any(value is None for value in values):
                raise ValueError(f"LabelledData.concatenate: {name} is set in some parts and None in others")
            return np.concatenate(values)

        return cls(
            obs=join("obs"),
            probs=join("probs"),
            features=join("features"),
            action_mask=join("action_mask"),
            aux={name: np.concatenate([part.aux[name] for part in parts]) for name in first.aux},
        )


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Settings of ``train_network``: Adam on the soft-label cross-entropy, in minibatches."""

    epochs: int = 10
    """Passes over the training data."""
    batch_size: int = 256
    """States per minibatch."""
    learning_rate: float = 1e-3
    """Adam step size."""
    weight_decay: float = 0.0
    """Adam L2 penalty."""
    aux_weight: float = 1.0
    """Weight of the mean squared error of every auxiliary head, added to the policy loss."""
    validation_fraction: float = 0.1
    """Share of the states held out to measure agreement; 0 measures it on the training data."""
    seed: int = 0
    """Seed of initialisation, shuffling and the validation split."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"TrainingConfig.validation_fraction must lie in [0, 1), got {self.validation_fraction}")


@dataclasses.dataclass(frozen=True)
class TrainingReport:
    """Measurements of one ``train_network`` run."""

    epoch_losses: tuple[float, ...]
    """Mean training loss of each epoch."""
    train_agreement: float
    """Share of training states where the network's argmax equals the teacher's."""
    validation_agreement: float | None
    """The same on the held-out states, or ``None`` without a validation split."""
    samples_per_second: float
    """Training throughput over all epochs."""

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready plain data."""
        return dataclasses.asdict(self)


def train_network(
    config: NetworkConfig,
    data: LabelledData,
    *,
    training: TrainingConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[PolicyNetwork, TrainingReport]:
    """Fit a new network of ``config`` to the teacher probabilities in ``data``.

    The loss is the cross-entropy of the network's masked softmax against the teacher
    probabilities, which differs from KL(teacher || network) by the teacher's entropy, a
    constant; auxiliary heads add ``aux_weight`` times their mean squared error.

    Raises:
        ValueError: ``data`` does not fit ``config`` (shapes, features, auxiliary targets).
    """
    training = training or TrainingConfig()
    _check_data_fits(config, data)
    torch.manual_seed(training.seed)
    module = build_network(config).to(device).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)

    # Split off validation states, then train in shuffled minibatches.
    rng = np.random.default_rng(training.seed)
    order = rng.permutation(data.size)
    held_out = int(data.size * training.validation_fraction)
    validation_rows, train_rows = order[:held_out], order[held_out:]
    if train_rows.size == 0:
        raise ValueError(f"no training states left after holding out {held_out} of {data.size}; lower validation_fraction")

    epoch_losses = []
    start = time.perf_counter()
    for epoch in range(training.epochs):
        rng.shuffle(train_rows)
        total = 0.0
        for first in range(0, train_rows.size, training.batch_size):
            mb_rows = train_rows[first : first + training.batch_size]
            loss = _loss(module, _batch(data, mb_rows, device), aux_weight=training.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * mb_rows.size
        epoch_losses.append(total / train_rows.size)
        logger.info("train_network epoch %d/%d: loss %.4f", epoch + 1, training.epochs, epoch_losses[-1])
    seconds = time.perf_counter() - start

    module.eval()
    report = TrainingReport(
        epoch_losses=tuple(epoch_losses),
        train_agreement=_agreement(module, data, train_rows, device),
        validation_agreement=_agreement(module, data, validation_rows, device) if held_out else None,
        samples_per_second=training.epochs * train_rows.size / seconds if seconds > 0 else 0.0,
    )
    return module, report


def _check_data_fits(config: NetworkConfig, data: LabelledData) -> None:
    if data.obs.shape[1:] != config.input_shape:
        raise ValueError(f"data.obs has states of shape {data.obs.shape[1:]}, but the network takes {config.input_shape}")
    if data.probs.shape[1] != config.num_actions:
        raise ValueError(f"data.probs has {data.probs.shape[1]} actions, but the network has {config.num_actions}")
    width = 0 if data.features is None else data.features.shape[1]
    if width != config.extra_input_size:
        raise ValueError(
            f"data.features has width {width}, but the network takes an extra input of width {config.extra_input_size}"
        )
    for name, shape in config.aux_heads:
        if name not in data.aux:
            raise ValueError(f"the network has an auxiliary head {name!r}, but data.aux has no such target")
        if data.aux[name].shape[1:] != shape:
            raise ValueError(f"data.aux[{name!r}] has per-state shape {data.aux[name].shape[1:]}, expected {shape}")


def _batch(data: LabelledData, rows: np.ndarray, device: str | torch.device) -> dict[str, Any]:
    def take(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(array[rows]).to(device)

    return {
        "obs": take(data.obs),
        "probs": take(data.probs),
        "features": take(data.features),
        "action_mask": take(data.action_mask),
        "aux": {name: torch.from_numpy(np.asarray(value[rows], np.float32)).to(device) for name, value in data.aux.items()},
    }


def _loss(module: PolicyNetwork, batch: dict[str, Any], *, aux_weight: float) -> torch.Tensor:
    logits, aux = module(batch["obs"], batch["features"])
    log_probs = torch.log_softmax(mask_logits(logits, batch["action_mask"]), dim=1)  # (B, A)
    loss = -(batch["probs"] * log_probs).sum(dim=1).mean()
    for name, prediction in aux.items():
        loss = loss + aux_weight * torch.nn.functional.mse_loss(prediction, batch["aux"][name])
    return loss


def _agreement(module: PolicyNetwork, data: LabelledData, rows: np.ndarray, device: str | torch.device) -> float:
    """Share of ``rows`` where the network's argmax equals the teacher's."""
    if rows.size == 0:
        return float("nan")
    matches = 0
    with torch.inference_mode():
        for first in range(0, rows.size, 4096):
            batch = _batch(data, rows[first : first + 4096], device)
            logits, _ = module(batch["obs"], batch["features"])
            chosen = mask_logits(logits, batch["action_mask"]).argmax(dim=1)
            matches += int((chosen == batch["probs"].argmax(dim=1)).sum())
    return matches / rows.size


# From any teacher to a neural teacher.


def collect_teacher_labels(
    teacher: Teacher,
    world: World,
    *,
    steps: int,
    seed: int = 0,
    features: NearestOffsets | None = None,
) -> LabelledData:
    """Roll ``world`` out with ``teacher`` acting and return its labels of every alive agent's state.

    Each step, the teacher labels every alive row with the privileged context (``rows``
    and ``World.state()``), and each agent's action is drawn from its label. Episodes
    that end are reset and the rollout continues, for ``steps`` steps in all.

    Args:
        teacher: any teacher whose observation shape and action count fit ``world``.
        world: the world to roll out; it is reset with ``seed`` first.
        steps: world steps to take.
        seed: seeds the world's reset and the action draws.
        features: privileged features to record with each state, for a network that
            takes them; ``None`` records none.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    rng = np.random.default_rng(seed)
    obs = world.reset(seed=seed)
    parts = []
    for _ in range(steps):
        rows = np.flatnonzero(world.alive)
        state = world.state()
        mask = world.action_mask()
        request = LabelRequest(
            obs=np.ascontiguousarray(obs[rows]),
            rows=rows,
            state=state,
            action_mask=None if mask is None else mask[rows],
        )
        labels = teacher.label(request)
        parts.append(
            LabelledData(
                obs=request.obs,
                probs=labels.probs,
                features=None if features is None else features.compute(rows, state),
                action_mask=request.action_mask,
                aux=dict(labels.aux),
            )
        )

        # Draw each alive agent's action from its label (inverse CDF), then step.
        cumulative = np.cumsum(labels.probs, axis=1)  # (B, A)
        draws = rng.random((rows.size, 1)) * cumulative[:, -1:]
        actions = np.zeros(world.num_agents, dtype=np.int64)
        actions[rows] = np.minimum((cumulative <= draws).sum(axis=1), world.num_actions - 1)
        obs = world.step(actions).obs
        if world.episode_over:
            obs = world.reset()
    return LabelledData.concatenate(parts)


def make_neural_teacher(
    data: LabelledData,
    path: str | os.PathLike[str],
    *,
    teacher_id: str,
    version: str = "1",
    features: NearestOffsets | None = None,
    hidden_sizes: tuple[int, ...] = DEFAULT_TEACHER_HIDDEN,
    training: TrainingConfig | None = None,
    device: str = "cpu",
) -> tuple[NeuralTeacherSpec, TrainingReport]:
    """Train a large network on ``data`` and save it as a teacher checkpoint at ``path``.

    The network is ``default_teacher_config``: an MLP with ``hidden_sizes`` (three layers
    of 2048, about 8M parameters, by default), taking ``features`` as extra input when
    given, with an auxiliary head for each of ``data.aux``.

    Returns:
        The spec that loads the teacher, and the training report (also stored in the
        checkpoint's metadata).

    Raises:
        ValueError: ``features`` and ``data.features`` disagree.
    """
    if (features is None) != (data.features is None):
        raise ValueError(
            "features and data.features must both be set or both be None: the network's extra "
            "input is computed by features when labelling and read from data.features when training"
        )
    config = default_teacher_config(
        tuple(data.obs.shape[1:]),
        int(data.probs.shape[1]),
        extra_input_size=0 if features is None else features.size,
        hidden_sizes=hidden_sizes,
        aux_heads={name: tuple(value.shape[1:]) for name, value in data.aux.items()},
    )
    module, report = train_network(config, data, training=training, device=device)
    metadata = {
        "teacher_id": teacher_id,
        "version": version,
        "privileged_features": None if features is None else features.to_dict(),
        "training": report.to_dict() | {"samples": data.size},
    }
    save_checkpoint(module, config, path, kind="teacher", metadata=metadata)
    logger.info(
        "made neural teacher %s (%d parameters) from %d labelled states: validation agreement %s",
        teacher_id, count_params(module), data.size, report.validation_agreement,
    )
    return NeuralTeacherSpec(path=os.fspath(path), device=device), report
