"""The run configuration: what a scenario file resolves to, frozen and typed.

Every field has a default except the scenario's name, so a scenario file states only
what differs. ``scenarios.schema`` validates TOML into these classes, and nothing past
the loader reads a raw dict. Units are given in each field's description.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Literal

TEACHER_KINDS = ("planner", "scripted", "neural", "llm", "mixture")
QUERY_STRATEGIES = ("random", "uncertainty", "margin")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The world each rollout worker simulates, one or more copies per worker."""

    name: str = "spread_v0"
    """Native world name (``sim.available_worlds()``), or a name for an external env."""
    entry_point: str | None = None
    """``"module:function"`` returning a PettingZoo ParallelEnv; ``None`` for native worlds."""
    agents_per_world: int = 1000
    """Agent rows per world copy; the population is split into copies of this size."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Options of the native world, or keyword arguments of the external env's function."""
    max_steps: int | None = None
    """Episode length of an external env that has no ``max_cycles``; steps."""


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    """How many agents act and how they are spread over rollout workers."""

    agents: int = 1000
    """Agents in the whole population; a multiple of ``world.agents_per_world``."""
    workers: int = 1
    """Rollout workers (Ray actors), each holding a shard of the world copies."""
    backend: Literal["ray", "serial"] = "ray"
    """``ray`` runs workers, teachers and the learner as Ray actors; ``serial`` runs all in one process."""
    cpus_per_worker: float = 0.5
    """CPUs each rollout worker reserves from Ray; fractions share a core."""


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """The teacher and the label service that batches its work."""

    kind: Literal["planner", "scripted", "neural", "llm", "mixture"] = "planner"
    """Teacher kind; ``options`` are the fields of that kind's spec."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Options of the teacher spec, such as ``depth`` and ``temperature`` for a planner."""
    replicas: int = 1
    """Teacher replicas behind the label service."""
    cpus_per_replica: float = 0.5
    """CPUs each replica reserves from Ray."""
    max_batch_size: int = 4096
    """Most states the service joins into one teacher call."""
    max_wait_ms: float = 0.0
    """Maximum time a queued request waits for others to join its batch; milliseconds. 0 batches only the backlog."""


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """The small network that replaces the teacher."""

    kind: Literal["mlp", "conv"] = "mlp"
    """``mlp`` flattens the observation; ``conv`` reads (V, V, C) grid views with convolutions."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers after the convolutions (if any)."""
    conv_channels: tuple[int, ...] = ()
    """Output channels of each convolution; ``conv`` students only."""
    kernel_sizes: tuple[int, ...] = ()
    """Odd kernel size of each convolution; ``conv`` students only."""
    aux_heads: bool = True
    """Give the student a head per auxiliary target of the teacher, for auxiliary distillation."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the distillation loss terms; a zero weight turns a term off."""

    behaviour_cloning: float = 0.0
    """Weight of cross-entropy on the teacher's argmax action."""
    soft_label: float = 1.0
    """Weight of KL(teacher || student) at ``temperature``, scaled by T^2."""
    auxiliary: float = 0.1
    """Weight of the squared error on the teacher's auxiliary targets."""
    temperature: float = 1.0
    """Softening temperature T of the KL term."""


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    """The query strategy and label budget that choose which visited states the teacher labels."""

    strategy: Literal["random", "uncertainty", "margin"] = "uncertainty"
    """``random`` states, the student's most ``uncertain`` (highest entropy), or smallest top-two ``margin``."""
    label_fraction: float = 0.1
    """Fraction of visited (alive agent) states to label per iteration, in (0, 1]."""
    labels_per_iteration: int | None = None
    """Fixed number of labels per iteration instead of ``label_fraction``."""


@dataclasses.dataclass(frozen=True)
class DaggerConfig:
    """DAgger's beta: the chance that an agent executes the teacher's action instead of the student's."""

    beta_start: float = 1.0
    """Beta at the first iteration, in [0, 1]."""
    beta_decay: float = 0.5
    """Factor applied to beta after every iteration, in [0, 1]."""
    beta_min: float = 0.0
    """Floor of beta, in [0, 1]."""


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The distillation loop and the learner."""

    mode: Literal["dagger", "offline"] = "dagger"
    """``dagger``: students act and teachers relabel their states; ``offline``: teacher-only rollouts."""
    iterations: int = 8
    """Collect-label-train iterations."""
    steps_per_iteration: int = 50
    """World steps every rollout worker takes per iteration."""
    updates_per_iteration: int = 100
    """Minibatch gradient steps of the learner per iteration."""
    batch_size: int = 1024
    """Labelled states per minibatch."""
    learning_rate: float = 3e-3
    """Adam learning rate."""
    max_dataset_states: int | None = None
    """Most recent labelled states the learner samples from; ``None`` keeps all."""
    torch_threads: int = 1
    """Threads torch may use in each rollout worker and in the driver; 1 leaves the other cores to other actors."""
    learner_threads: int = 2
    """Threads torch may use in the learner, which trains while the rollout workers wait."""
    learner_cpus: float = 0.5
    """CPUs the learner actor reserves from Ray."""


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation on fixed seeds after training: returns, agreement and KL."""

    seeds: tuple[int, ...] = (10_000,)
    """Seeds of the evaluation episodes; each runs teacher-only and student-only."""
    agents: int | None = None
    """Agents per evaluation world; ``None`` uses ``world.agents_per_world``."""
    agreement_states: int = 4000
    """Student-visited states the teacher labels to measure agreement and KL."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole scenario, resolved."""

    name: str
    """Scenario name, used in the run directory's name."""
    description: str = ""
    """One line that ``shepherd scenarios`` prints."""
    seed: int = 0
    """Base seed of worlds, policies and sampling."""
    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    population: PopulationConfig = dataclasses.field(default_factory=PopulationConfig)
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    query: QueryConfig = dataclasses.field(default_factory=QueryConfig)
    dagger: DaggerConfig = dataclasses.field(default_factory=DaggerConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (tuples become lists, mappings dicts)."""
        return to_plain(self)

    def config_hash(self) -> str:
        """Return the sha256 of the canonical JSON of ``to_dict()``: the scenario's identity."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def to_plain(value: Any, *, non_finite_as_none: bool = False) -> Any:
    """Return ``value`` as plain data: dataclasses and mappings become dicts, tuples lists,
    numpy scalars Python numbers; with ``non_finite_as_none``, NaN and inf become ``None``
    so the result is valid JSON."""
    def convert(item: Any) -> Any:
        return to_plain(item, non_finite_as_none=non_finite_as_none)

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return convert(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): convert(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [convert(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar
    if non_finite_as_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
