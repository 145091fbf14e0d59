"""Checkpoints: network weights as safetensors next to a JSON config. Loading never unpickles.

A checkpoint named ``<stem>`` is two files:

- ``<stem>.safetensors``: the module's state dict, read with ``safetensors.torch.load_file``.
- ``<stem>.json``: the ``NetworkConfig``, the checkpoint kind (``"student"`` or
  ``"teacher"``), free-form metadata such as a teacher's id and version, a format version
  and the sha256 of the weights file, checked on load.

Both files are written to a temporary name and renamed into place. A pickle or
``torch.save`` file given as a checkpoint is rejected before any of its bytes are
interpreted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import safetensors
import safetensors.torch
import torch
from torch import nn

from policies.networks import NetworkConfig, PolicyNetwork, build_network

logger = logging.getLogger(__name__)

FORMAT = "shepherd-checkpoint"
"""Value of the ``format`` key of every checkpoint's JSON file."""

FORMAT_VERSION = 1
"""Version of the JSON layout; loading rejects other versions."""

CHECKPOINT_KINDS = ("student", "teacher")
"""Checkpoint kinds: a student policy or a neural teacher."""

WEIGHTS_SUFFIX = ".safetensors"
CONFIG_SUFFIX = ".json"

# Pickle protocol 2 and later start with the PROTO opcode 0x80. torch.save writes a zip
# archive (local file header "PK\x03\x04") that contains a pickle.
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, a pickle file, or does not match its config."""


@dataclasses.dataclass(frozen=True)
class CheckpointMetadata:
    """The contents of a checkpoint's JSON file besides the network config."""

    kind: str
    """``"student"`` or ``"teacher"``."""
    extra: Mapping[str, Any]
    """Free-form JSON metadata, such as ``teacher_id`` and ``version`` of a teacher."""
    weights_sha256: str
    """Hex sha256 of the ``.safetensors`` file."""
    format_version: int = FORMAT_VERSION
    """Version of the JSON layout."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint, which unpacks as ``module, config, metadata``."""

    module: PolicyNetwork
    """The network in eval mode, on the device given to ``load_checkpoint``."""
    config: NetworkConfig
    """The config the network was built from."""
    metadata: CheckpointMetadata
    """Kind, free-form metadata and the weights' sha256."""


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return the (weights, config) file paths of the checkpoint at ``path``.

    ``path`` may be the stem or either file: ``model``, ``model.safetensors`` and
    ``model.json`` name the same checkpoint.
    """
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, CONFIG_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + CONFIG_SUFFIX)


def save_checkpoint(
    module: nn.Module,
    config: NetworkConfig,
    path: str | os.PathLike[str],
    *,
    kind: str = "student",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``module``'s weights and ``config`` as a checkpoint and return the weights path.

    Args:
        module: a network built from ``config``.
        config: its architecture.
        path: the checkpoint stem, or either of its file names.
        kind: ``"student"`` or ``"teacher"``.
        metadata: JSON-serialisable extra data, such as ``{"teacher_id": ..., "version": ...}``.

    Raises:
        CheckpointError: ``module``'s tensors do not match ``config``, or ``metadata`` is
            not JSON-serialisable.
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CHECKPOINT_KINDS)}, got {kind!r}")
    weights_path, config_path = checkpoint_paths(path)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in module.state_dict().items()}
    check_state_dict(state, config, source=f"module {type(module).__name__}")
    try:
        metadata_json = json.loads(json.dumps(dict(metadata or {})))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {error}") from None

    weights_path.parent.mkdir(parents=True, exist_ok=True)
    weights_bytes = safetensors.torch.save(state)
    write_atomic(weights_path, weights_bytes)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "network": config.to_dict(),
        "metadata": metadata_json,
        "weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
    }
    write_atomic(config_path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    logger.info("saved %s checkpoint %s (%d tensors)", kind, weights_path, len(state))
    return weights_path


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected_kind: str | None = None,
) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint``, without unpickling anything.

    Args:
        path: the checkpoint stem, or either of its file names.
        device: where to put the weights, such as ``"cpu"`` or ``"cuda"``.
        expected_kind: ``"student"`` or ``"teacher"`` to reject the other kind, or ``None``.

    Raises:
        CheckpointError: a file is missing, is a pickle file, is malformed, has a
            different sha256 than its config records, or its tensors do not match the config.
    """
    weights_path, config_path = checkpoint_paths(path)
    reject_pickle(Path(path))
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights {weights_path} not found; save one with save_checkpoint")
    reject_pickle(weights_path)
    if not config_path.is_file():
        raise CheckpointError(
            f"checkpoint config {config_path} not found; a checkpoint is a .safetensors file with a "
            ".json config of the same stem, as save_checkpoint writes them"
        )

    config, metadata = _read_config(config_path)
    if expected_kind is not None and metadata.kind != expected_kind:
        raise CheckpointError(f"{config_path} is a {metadata.kind} checkpoint, expected a {expected_kind}")
    weights_bytes = weights_path.read_bytes()
    digest = hashlib.sha256(weights_bytes).hexdigest()
    if digest != metadata.weights_sha256:
        raise CheckpointError(
            f"{weights_path} has sha256 {digest}, but {config_path} records {metadata.weights_sha256}; "
            "the weights were replaced after the config was written. Save the checkpoint again"
        )
    try:
        state = safetensors.torch.load(weights_bytes)
    except safetensors.SafetensorError as error:
        raise CheckpointError(f"{weights_path} is not a valid safetensors file: {error}") from None

    # Build on the meta device and adopt the loaded tensors, so the weights are neither
    # initialised nor copied once more.
    check_state_dict(state, config, source=str(weights_path))
    module = _meta_network(config)
    module.load_state_dict(state, strict=True, assign=True)
    module.to(device).eval()
    return Checkpoint(module, config, metadata)


def check_state_dict(state: Mapping[str, torch.Tensor], config: NetworkConfig, *, source: str) -> None:
    """Raise ``CheckpointError`` unless ``state`` has exactly the tensors a network of ``config`` has.

    The message lists missing and unexpected tensor names and shape mismatches.
    """
    expected = {name: tuple(tensor.shape) for name, tensor in _meta_network(config).state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    mismatched = [
        f"{name}: {tuple(state[name].shape)} != expected {expected[name]}"
        for name in sorted(set(expected) & set(state))
        if tuple(state[name].shape) != expected[name]
    ]
    if mismatched:
        problems.append(f"shape mismatches [{'; '.join(mismatched)}]")
    wrong_dtype = sorted(name for name, tensor in state.items() if tensor.dtype != torch.float32)
    if wrong_dtype:
        problems.append(f"non-float32 tensors {wrong_dtype}")
    if problems:
        raise CheckpointError(
            f"{source} does not match its network config ({config.kind}, input {config.input_shape}, "
            f"hidden {config.hidden_sizes}, {config.num_actions} actions): {'; '.join(problems)}. "
            "Save the weights together with the config they were trained with"
        )


def load_state_dict(module: PolicyNetwork, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Copy ``state`` into ``module`` after ``check_state_dict`` accepts it."""
    check_state_dict(state, module.config, source=source)
    with torch.no_grad():
        module.load_state_dict(dict(state), strict=True)


def reject_pickle(path: Path) -> None:
    """Raise ``CheckpointError`` if ``path`` is a pickle or ``torch.save`` file."""
    if not path.is_file():
        return
    with path.open("rb") as file:
        head = file.read(4)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path} is a pickle file (torch.save or pickle output), and shepherd never unpickles, "
            "because loading a pickle can run arbitrary code. Convert it once, in a process you "
            "trust: module = build_network(config); module.load_state_dict(torch.load(path, "
            "weights_only=True)); save_checkpoint(module, config, stem)"
        )


def _meta_network(config: NetworkConfig) -> PolicyNetwork:
    """Build ``config``'s network on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"):
        return build_network(config)


def _read_config(config_path: Path) -> tuple[NetworkConfig, CheckpointMetadata]:
    reject_pickle(config_path)
    try:
        document = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a shepherd checkpoint config: its 'format' is not {FORMAT!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {document.get('format_version')!r}; this shepherd "
            f"reads version {FORMAT_VERSION}"
        )
    missing = sorted({"kind", "network", "metadata", "weights_sha256"} - set(document))
    if missing:
        raise CheckpointError(f"{config_path} is missing key(s) {', '.join(missing)}")
    if document["kind"] not in CHECKPOINT_KINDS:
        raise CheckpointError(
            f"{config_path}: kind must be one of {', '.join(CHECKPOINT_KINDS)}, got {document['kind']!r}"
        )
    try:
        config = NetworkConfig.from_dict(document["network"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid network config: {error}") from None
    metadata = CheckpointMetadata(
        kind=document["kind"],
        extra=document["metadata"],
        weights_sha256=document["weights_sha256"],
        format_version=document["format_version"],
    )
    return config, metadata


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a flushed temporary file next to ``path`` and rename it into place.

    A crash leaves either the old file or the new one, never a half-written one.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
