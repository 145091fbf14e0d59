"""The neural teacher: a large network loaded from a checkpoint, and the tools to make one.

``NeuralTeacher`` labels states with any ``PolicyNetwork`` saved by ``save_checkpoint``
(safetensors plus JSON, never pickle), on the CPU or a GPU. ``label_many`` joins every
request into one forward pass, so the default teacher, a 2048-wide MLP of about 8M
parameters, spends its time in large matrix products.

A teacher may also read privileged input. ``NearestOffsets`` turns ``World.state()`` into a
flat feature vector per agent, which the network takes as its extra input; such a teacher
sets ``requires_state``.

``collect_teacher_labels`` records any teacher's labels along its own rollouts, and
``train_network`` fits a network to labelled arrays. ``make_neural_teacher`` trains and
saves a large network, so every world can have a neural teacher made from a planner or
any other teacher.

Shape letters: B states in a batch, N labelled states in a data set, A actions, O the
observation shape, F the width of the privileged features, K neighbours per point set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from policies.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint, save_checkpoint
from policies.networks import (
    DEFAULT_TEACHER_HIDDEN,
    NetworkConfig,
    PolicyNetwork,
    build_network,
    count_params,
    default_teacher_config,
    flops_per_decision,
    mask_logits,
)
from policies.teacher import LabelInputError, LabelRequest, Teacher
from sim.world import World

logger = logging.getLogger(__name__)

TEAM_SET_PREFIX = "team:"
"""Point sets named ``"team:<i>"`` are the alive agents of team ``i``, from ``positions`` and ``team_ids``."""


# Privileged features.


@dataclasses.dataclass(frozen=True)
class NearestOffsets:
    """Offsets from each agent to its K nearest points of several point sets of ``World.state()``.

    Point sets are state keys holding (M, D) positions, such as ``"food_positions"`` or
    ``"target_positions"``, and ``"team:<i>"``, the other alive agents of team ``i``. Each
    set contributes its K nearest points by Euclidean distance. A point's features are its
    offset ``point - own position`` passed through ``sign(x) * log1p(|x|)`` and a presence
    flag, which is 0 where the set has fewer than K points. The log transform keeps far
    points distinguishable without a map-size scale. So F = sets * K * (D + 1).

    It needs ``positions`` ((N, D), every agent's position) in the state, and reads
    ``alive`` and ``team_ids`` where present. The native grid worlds and MAgent2 worlds
    adapted by ``sim.from_pettingzoo`` provide them.
    """

    point_sets: tuple[str, ...]
    """State keys or ``"team:<i>"`` names, in feature order."""
    k: int = 4
    """K, the neighbours kept per point set."""
    dims: int = 2
    """D, the number of coordinates of a position."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "point_sets", tuple(self.point_sets))
        if not self.point_sets:
            raise ValueError("NearestOffsets needs at least one point set, got none")
        for name in self.point_sets:
            if not isinstance(name, str) or not name:
                raise ValueError(f"point set names must be non-empty strings, got {name!r}")
            if name.startswith(TEAM_SET_PREFIX) and not name.removeprefix(TEAM_SET_PREFIX).isdigit():
                raise ValueError(f"team point sets must read 'team:<index>', such as 'team:0', got {name!r}")
        for field, value in (("k", self.k), ("dims", self.dims)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NearestOffsets.{field} must be an integer >= 1, got {value!r}")

    @classmethod
    def for_state(cls, state: Mapping[str, np.ndarray], *, k: int = 4) -> NearestOffsets:
        """Choose the point sets of ``state``: every ``*_positions`` key, then every team.

        Raises:
            ValueError: ``state`` has no ``positions`` array.
        """
        positions = _state_array(state, "positions", "NearestOffsets")
        point_sets = [key for key in sorted(state) if key.endswith("_positions")]
        if "team_ids" in state:
            num_teams = int(np.max(state["team_ids"])) + 1 if len(state["team_ids"]) else 1
            point_sets += [f"{TEAM_SET_PREFIX}{team}" for team in range(num_teams)]
        else:
            point_sets.append(f"{TEAM_SET_PREFIX}0")
        return cls(point_sets=tuple(point_sets), k=k, dims=int(positions.shape[1]))

    @property
    def size(self) -> int:
        """F, the number of features per agent."""
        return len(self.point_sets) * self.k * (self.dims + 1)

    def compute(self, rows: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return (B, F) float32 features of the agents in ``rows``.

        Raises:
            LabelInputError: ``state`` lacks an array the point sets need, or an array has
                the wrong shape.
        """
        positions = _state_array(state, "positions", "NearestOffsets").astype(np.float64)
        if positions.ndim != 2 or positions.shape[1] != self.dims:
            raise LabelInputError(
                f"NearestOffsets: state['positions'] must have shape (N, {self.dims}), got {positions.shape}"
            )
        rows = np.asarray(rows, dtype=np.int64)
        own = positions[rows]  # (B, D)
        alive = np.asarray(state["alive"], dtype=bool) if "alive" in state else np.ones(len(positions), bool)
        blocks = [self._nearest(self._points(name, state, positions, alive), own, rows) for name in self.point_sets]
        return np.concatenate(blocks, axis=1).astype(np.float32)  # (B, F)

    def _points(
        self, name: str, state: Mapping[str, np.ndarray], positions: np.ndarray, alive: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the (M, D) points of set ``name`` and, for agent sets, their (M,) rows."""
        if name.startswith(TEAM_SET_PREFIX):
            team = int(name.removeprefix(TEAM_SET_PREFIX))
            team_ids = np.asarray(state["team_ids"]) if "team_ids" in state else np.zeros(len(positions), int)
            members = np.flatnonzero(alive & (team_ids == team))
            return positions[members], members
        points = _state_array(state, name, "NearestOffsets").astype(np.float64)
        if points.ndim != 2 or points.shape[1] != self.dims:
            raise LabelInputError(f"NearestOffsets: state[{name!r}] must have shape (M, {self.dims}), got {points.shape}")
        return points, None

    def _nearest(
        self, points_and_rows: tuple[np.ndarray, np.ndarray | None], own: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Return (B, K * (D + 1)) offsets and presence flags of the K nearest points, the agent itself excluded."""
        points, point_rows = points_and_rows
        batch = own.shape[0]
        features = np.zeros((batch, self.k, self.dims + 1), dtype=np.float64)  # (B, K, D + 1)
        if len(points) == 0 or batch == 0:
            return features.reshape(batch, -1)

        # Query one extra neighbour of agent sets, because an agent finds itself at distance 0.
        extra = 1 if point_rows is not None else 0
        count = min(self.k + extra, len(points))
        _, index = cKDTree(points).query(own, k=count)
        index = index.reshape(batch, count)  # (B, count)
        if point_rows is not None:
            is_self = point_rows[index] == rows[:, None]  # (B, count)
            # A stable sort moves the agent's own entry last and keeps the others in distance order.
            index = np.take_along_axis(index, np.argsort(is_self, axis=1, kind="stable"), axis=1)
            present = np.sort(is_self, axis=1, kind="stable")[:, : self.k] == 0
            index = index[:, : self.k]
        else:
            present = np.ones(index.shape, dtype=bool)

        offsets = points[index] - own[:, None, :]  # (B, K', D)
        kept = index.shape[1]
        features[:, :kept, : self.dims] = np.sign(offsets) * np.log1p(np.abs(offsets)) * present[..., None]
        features[:, :kept, self.dims] = present
        return features.reshape(batch, -1)

    def to_dict(self) -> dict[str, Any]:
        """Return the feature spec as JSON-ready plain data, as checkpoints store it."""
        return {"kind": "nearest_offsets", "point_sets": list(self.point_sets), "k": self.k, "dims": self.dims}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NearestOffsets:
        """Build the spec from ``to_dict`` output.

        Raises:
            ValueError: an unknown kind or keys.
        """
        data = dict(data)
        kind = data.pop("kind", None)
        if kind != "nearest_offsets":
            raise ValueError(f"unknown privileged feature kind {kind!r}; this shepherd knows 'nearest_offsets'")
        unknown = sorted(set(data) - {"point_sets", "k", "dims"})
        if unknown:
            raise ValueError(f"unknown NearestOffsets key(s) {', '.join(unknown)}; valid keys: dims, k, point_sets")
        return cls(**data)


def _state_array(state: Mapping[str, np.ndarray], key: str, owner: str) -> np.ndarray:
    if key not in state:
        raise LabelInputError(
            f"{owner}: the world state has no {key!r} array; its keys are {sorted(state)}. "
            "Choose point sets the world's state() provides"
        )
    return np.asarray(state[key])


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
