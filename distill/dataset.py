"""Labelled states on disk: Parquet shards plus a manifest that proves their provenance.

A dataset directory contains ``shard-NNNNN.parquet`` files and ``manifest.json``. Each
shard row is one labelled state: the observation, the agent and world step it came from,
the teacher's identity and version, its action probabilities, its auxiliary targets and
the iteration that collected it. The manifest lists every shard with its sha256 and row
count, plus the scenario's hash and the code version that wrote it.

Writes are atomic: a shard is written to a temporary file, flushed and renamed, and only
then added to the manifest, which is itself replaced atomically. A crash therefore never
leaves a half-written shard in the manifest; at worst it leaves an orphan file that the
next writer removes. Opening a writer on an existing dataset continues after its last
shard, so runs can resume.

Shape letters: R rows (labelled states), A actions, O the observation shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policies.checkpoint import write_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "shepherd-dataset"
MANIFEST_VERSION = 1
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.parquet$")
AUX_PREFIX = "aux_"


class DatasetError(Exception):
    """A dataset directory is missing, malformed or does not match what is written to it."""


@dataclasses.dataclass(frozen=True)
class LabelledBatch:
    """Labelled states to append to a dataset, all of one observation shape."""

    obs: np.ndarray
    """(R, *O) float32 observations."""
    agent_ids: np.ndarray
    """(R,) int64 agent index in the population (world offset plus row)."""
    world_steps: np.ndarray
    """(R,) int64 step of the world's episode at which the state was visited."""
    probs: np.ndarray
    """(R, A) float32 teacher action probabilities."""
    teacher_ids: Sequence[str]
    """(R,) teacher identity of each label."""
    teacher_versions: Sequence[str]
    """(R,) teacher version of each label."""
    iteration: int
    """Distillation iteration that collected these states."""
    aux: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Auxiliary targets, each (R, ...) float32."""
    action_mask: np.ndarray | None = None
    """(R, A) bool legal actions, or ``None`` when every action was legal."""

    @property
    def size(self) -> int:
        """R, the number of labelled states."""
        return int(self.obs.shape[0])

    def validate(self) -> None:
        """Raise ``DatasetError`` unless every column has R rows and the expected dtype."""
        rows = self.size
        columns = {
            "agent_ids": np.shape(self.agent_ids),
            "world_steps": np.shape(self.world_steps),
            "teacher_ids": (len(self.teacher_ids),),
            "teacher_versions": (len(self.teacher_versions),),
        }
        for name, shape in columns.items():
            if shape != (rows,):
                raise DatasetError(f"{name} must have shape ({rows},) like obs, got {shape}")
        if self.probs.ndim != 2 or self.probs.shape[0] != rows:
            raise DatasetError(f"probs must have shape ({rows}, A), got {self.probs.shape}")
        if not np.isfinite(self.obs).all() or not np.isfinite(self.probs).all():
            raise DatasetError("obs and probs must be finite; refusing to store NaN or inf labels")
        for name, values in self.aux.items():
            if np.shape(values)[:1] != (rows,):
                raise DatasetError(f"auxiliary target {name!r} must have {rows} rows, got shape {np.shape(values)}")
        if self.action_mask is not None and self.action_mask.shape != self.probs.shape:
            raise DatasetError(
                f"action_mask must have the shape of probs {self.probs.shape}, got {self.action_mask.shape}"
            )


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One manifest entry."""

    file: str
    sha256: str
    rows: int
    iteration: int
    teachers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "teachers": list(self.teachers)}


# Hashing.


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Arrow conversion.


def _fixed_list(values: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(values).reshape(values.shape[0], -1)
    width = flat.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=value_type), width)


def batch_to_table(batch: LabelledBatch) -> pa.Table:
    """Convert a ``LabelledBatch`` to an Arrow table; shapes go into the schema metadata."""
    batch.validate()
    columns: dict[str, pa.Array] = {
        "obs": _fixed_list(batch.obs.astype(np.float32, copy=False), pa.float32()),
        "agent_id": pa.array(np.asarray(batch.agent_ids, dtype=np.int64)),
        "world_step": pa.array(np.asarray(batch.world_steps, dtype=np.int64)),
        "teacher_id": pa.array(list(batch.teacher_ids), type=pa.string()).dictionary_encode(),
        "teacher_version": pa.array(list(batch.teacher_versions), type=pa.string()).dictionary_encode(),
        "probs": _fixed_list(batch.probs.astype(np.float32, copy=False), pa.float32()),
        "iteration": pa.array(np.full(batch.size, batch.iteration, dtype=np.int32)),
    }
    aux_shapes = {}
    for name, values in sorted(batch.aux.items()):
        values = np.asarray(values, dtype=np.float32)
        aux_shapes[name] = list(values.shape[1:])
        columns[AUX_PREFIX + name] = _fixed_list(values.reshape(batch.size, -1), pa.float32())
    if batch.action_mask is not None:
        columns["action_mask"] = _fixed_list(batch.action_mask.astype(bool), pa.bool_())
    metadata = {
        "obs_shape": json.dumps(list(batch.obs.shape[1:])),
        "num_actions": json.dumps(int(batch.probs.shape[1])),
        "aux_shapes": json.dumps(aux_shapes),
    }
    return pa.table(columns, metadata={key.encode(): value.encode() for key, value in metadata.items()})


# Writing.


class DatasetWriter:
    """Appends labelled batches to a dataset directory as atomic Parquet shards.

    Args:
        directory: the dataset directory; created when missing.
        scenario_hash: sha256 of the resolved scenario, recorded in the manifest.
        code_version: version of the code writing the data, recorded in the manifest.

    Raises:
        DatasetError: the directory contains a manifest of another scenario or format.
    """

    def __init__(self, directory: str | os.PathLike[str], *, scenario_hash: str, code_version: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scenario_hash = scenario_hash
        self.code_version = code_version
        self._shards: list[ShardInfo] = []
        self._schema_info: dict[str, Any] | None = None

        manifest_path = self.directory / MANIFEST_NAME
        if manifest_path.exists():
            manifest = read_manifest(self.directory)
            if manifest["scenario_hash"] != scenario_hash:
                raise DatasetError(
                    f"{self.directory} contains a dataset of scenario hash {manifest['scenario_hash'][:12]}, "
                    f"not {scenario_hash[:12]}; write to a new directory (--out) instead of mixing runs"
                )
            self._shards = [ShardInfo(**{**entry, "teachers": tuple(entry["teachers"])}) for entry in manifest["shards"]]
            self._schema_info = manifest.get("schema")
            logger.info("resuming dataset %s after %d shards", self.directory, len(self._shards))
        self._remove_orphans()

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        """Shards in the manifest, in write order."""
        return tuple(self._shards)

    @property
    def rows(self) -> int:
        """Labelled states in the manifest."""
        return sum(shard.rows for shard in self._shards)

    def append(self, batch: LabelledBatch) -> ShardInfo:
        """Write ``batch`` as the next shard and add it to the manifest."""
        table = batch_to_table(batch)
        schema_info = {
            key.decode(): json.loads(value) for key, value in (table.schema.metadata or {}).items()
        }
        if self._schema_info is not None and schema_info != self._schema_info:
            raise DatasetError(
                f"batch shapes {schema_info} differ from the dataset's {self._schema_info}; "
                "one dataset holds one observation shape, action count and set of auxiliary targets"
            )

        name = f"shard-{len(self._shards):05d}.parquet"
        path = self.directory / name
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_atomic(path, sink.getvalue().to_pybytes())

        info = ShardInfo(
            file=name,
            sha256=sha256_file(path),
            rows=batch.size,
            iteration=batch.iteration,
            teachers=tuple(sorted({f"{t}@{v}" for t, v in zip(batch.teacher_ids, batch.teacher_versions)})),
        )
        self._shards.append(info)
        self._schema_info = schema_info
        self._write_manifest()
        return info

    def _write_manifest(self) -> None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "scenario_hash": self.scenario_hash,
            "code_version": self.code_version,
            "schema": self._schema_info,
            "rows": self.rows,
            "shards": [shard.to_dict() for shard in self._shards],
        }
        write_atomic(self.directory / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())

    def _remove_orphans(self) -> None:
        listed = {shard.file for shard in self._shards}
        for path in sorted(self.directory.iterdir()):
            orphan_shard = SHARD_PATTERN.match(path.name) and path.name not in listed
            leftover_temporary = path.name.startswith(".") and path.name.endswith(".tmp")
            if orphan_shard or leftover_temporary:
                logger.warning("removing %s: not in the manifest (left by an interrupted write)", path)
                path.unlink()


# Reading and verifying.


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the parsed manifest of a dataset directory, checking its format."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        raise DatasetError(f"{path} not found; is {directory} a shepherd dataset directory?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path} is not a shepherd dataset manifest: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DatasetError(f"{path} is not a shepherd dataset manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DatasetError(
            f"{path} has manifest version {manifest.get('version')!r}; this code reads version {MANIFEST_VERSION}"
        )
    return manifest


def verify_dataset(directory: str | os.PathLike[str]) -> list[str]:
    """Re-hash every shard in the manifest; return one problem line per bad shard, empty when all match."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems = []
    for entry in manifest["shards"]:
        path = directory / entry["file"]
        if not path.exists():
            problems.append(f"{entry['file']}: missing")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 {actual} does not match the manifest's {entry['sha256']}")
    return problems


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
    """A whole dataset as arrays, ready for training."""

    obs: np.ndarray
    """(R, *O) float32."""
    probs: np.ndarray
    """(R, A) float32."""
    agent_ids: np.ndarray
    """(R,) int64."""
    world_steps: np.ndarray
    """(R,) int64."""
    iterations: np.ndarray
    """(R,) int32."""
    teacher_ids: np.ndarray
    """(R,) object array of teacher ids."""
    aux: dict[str, np.ndarray]
    """Each (R, ...) float32."""
    action_mask: np.ndarray | None
    """(R, A) bool, or ``None``."""

    @property
    def size(self) -> int:
        return int(self.obs.shape[0])


def load_dataset(directory: str | os.PathLike[str], *, verify: bool = True) -> LoadedDataset:
    """Read every shard in the manifest into arrays; with ``verify``, reject changed shards."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if verify:
        problems = verify_dataset(directory)
        if problems:
            raise DatasetError(f"{directory} failed verification: " + "; ".join(problems))
    schema = manifest.get("schema") or {}
    if not manifest["shards"]:
        raise DatasetError(f"{directory} has no shards yet")
    table = pa.concat_tables(pq.read_table(directory / entry["file"]) for entry in manifest["shards"])
    return _table_to_arrays(table, schema)


def _column_array(table: pa.Table, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
    column = table.column(name).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values.reshape(len(table), *shape)


def _table_to_arrays(table: pa.Table, schema: Mapping[str, Any]) -> LoadedDataset:
    obs_shape = tuple(schema["obs_shape"])
    num_actions = int(schema["num_actions"])
    aux = {
        name: _column_array(table, AUX_PREFIX + name, shape, np.float32)
        for name, shape in schema.get("aux_shapes", {}).items()
    }
    mask = (
        _column_array(table, "action_mask", (num_actions,), bool) if "action_mask" in table.column_names else None
    )
    return LoadedDataset(
        obs=_column_array(table, "obs", obs_shape, np.float32),
        probs=_column_array(table, "probs", (num_actions,), np.float32),
        agent_ids=table.column("agent_id").to_numpy(),
        world_steps=table.column("world_step").to_numpy(),
        iterations=table.column("iteration").to_numpy(),
        teacher_ids=np.asarray(table.column("teacher_id").cast(pa.string()).to_pylist(), dtype=object),
        aux=aux,
        action_mask=mask,
    )
