"""Tests of checkpoints: safetensors plus JSON, atomic writes, and what loading rejects."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from policies.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    save_checkpoint,
)
from policies.networks import NetworkConfig, build_network

CONFIG = NetworkConfig(input_shape=(3, 3, 2), num_actions=5, hidden_sizes=(8,), aux_heads={"value": (1,)})
CONV_CONFIG = NetworkConfig(
    input_shape=(3, 3, 2), num_actions=5, kind="conv", conv_channels=(4,), kernel_sizes=(3,), hidden_sizes=(8,)
)


class _TouchOnUnpickle:
    """Creates a file when unpickled, to prove that loading never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _saved(tmp_path, config=CONFIG, **options):
    torch.manual_seed(0)
    module = build_network(config)
    save_checkpoint(module, config, tmp_path / "model", **options)
    return module


def _rewrite_config(tmp_path, change):
    config_path = tmp_path / "model.json"
    document = json.loads(config_path.read_text())
    change(document)
    config_path.write_text(json.dumps(document))


@pytest.mark.parametrize("config", [CONFIG, CONV_CONFIG], ids=["mlp", "conv"])
def test_round_trip_gives_same_outputs(tmp_path, config):
    module = _saved(tmp_path, config, kind="teacher", metadata={"teacher_id": "neural/test", "version": "3"})
    loaded, loaded_config, metadata = load_checkpoint(tmp_path / "model")

    obs = torch.randn(4, *config.input_shape)
    assert loaded_config == config
    assert torch.equal(loaded(obs)[0], module(obs)[0])
    assert not loaded.training
    assert metadata.kind == "teacher"
    assert metadata.extra == {"teacher_id": "neural/test", "version": "3"}
    assert metadata.format_version == FORMAT_VERSION


def test_files_and_json_contents(tmp_path):
    _saved(tmp_path)
    document = json.loads((tmp_path / "model.json").read_text())
    weights = (tmp_path / "model.safetensors").read_bytes()
    assert document["format"] == "shepherd-checkpoint"
    assert document["kind"] == "student"
    assert document["network"] == CONFIG.to_dict()
    assert document["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("name", ["model", "model.safetensors", "model.json"])
def test_any_checkpoint_path_form_loads(tmp_path, name):
    _saved(tmp_path)
    assert load_checkpoint(tmp_path / name).config == CONFIG


def test_checkpoint_paths():
    assert checkpoint_paths("runs/a.b") == (Path("runs/a.b.safetensors"), Path("runs/a.b.json"))
    assert checkpoint_paths("runs/a.json") == (Path("runs/a.safetensors"), Path("runs/a.json"))


def test_save_overwrites_atomically(tmp_path):
    _saved(tmp_path)
    torch.manual_seed(1)
    module = build_network(CONFIG)
    save_checkpoint(module, CONFIG, tmp_path / "model")
    loaded = load_checkpoint(tmp_path / "model").module
    assert torch.equal(loaded.policy_head.weight, module.policy_head.weight)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("writer", ["torch_save", "pickle"])
@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_pickle_checkpoint_is_rejected(tmp_path, writer, name):
    marker = tmp_path / "unpickled"
    payload = {"weights": torch.zeros(2), "trap": _TouchOnUnpickle(marker)}
    path = tmp_path / name
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))

    with pytest.raises(CheckpointError, match="is a pickle file .* shepherd never unpickles.*save_checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_next_to_json_is_rejected(tmp_path):
    _saved(tmp_path)
    torch.save(build_network(CONFIG).state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="is a pickle file"):
        load_checkpoint(tmp_path / "model")


def test_missing_json_raises(tmp_path):
    _saved(tmp_path)
    (tmp_path / "model.json").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint config .*model\.json not found"):
        load_checkpoint(tmp_path / "model")


def test_missing_weights_raises(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint weights .*nothing\.safetensors not found"):
        load_checkpoint(tmp_path / "nothing")


def test_config_with_other_shapes_raises(tmp_path):
    _saved(tmp_path)
    _rewrite_config(tmp_path, lambda document: document["network"].update(hidden_sizes=[16]))
    with pytest.raises(CheckpointError, match=r"shape mismatches \[.*body\.0\.bias: \(8,\) != expected \(16,\);"):
        load_checkpoint(tmp_path / "model")


def test_config_with_other_tensors_raises(tmp_path):
    _saved(tmp_path)
    _rewrite_config(tmp_path, lambda document: document["network"].update(aux_heads={"goal": [2]}))
    with pytest.raises(
        CheckpointError,
        match=r"missing tensors \['aux\.goal\.bias', 'aux\.goal\.weight'\]; "
        r"unexpected tensors \['aux\.value\.bias', 'aux\.value\.weight'\]",
    ):
        load_checkpoint(tmp_path / "model")


def test_replaced_weights_raise(tmp_path):
    _saved(tmp_path)
    torch.manual_seed(5)
    state = build_network(CONFIG).state_dict()
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="the weights were replaced after the config was written"):
        load_checkpoint(tmp_path / "model")


def test_invalid_safetensors_raises(tmp_path):
    _saved(tmp_path)
    garbage = b"this is not safetensors"
    (tmp_path / "model.safetensors").write_bytes(garbage)
    _rewrite_config(tmp_path, lambda document: document.update(weights_sha256=hashlib.sha256(garbage).hexdigest()))
    with pytest.raises(CheckpointError, match="is not a valid safetensors file"):
        load_checkpoint(tmp_path / "model")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda document: document.update(format="other"), "is not a shepherd checkpoint config"),
        (lambda document: document.update(format_version=99), "has format_version 99; this shepherd reads version 1"),
        (lambda document: document.pop("weights_sha256"), "is missing key.s. weights_sha256"),
        (lambda document: document.update(kind="critic"), "kind must be one of student, teacher, got 'critic'"),
        (
            lambda document: document["network"].update(kind="rnn"),
            "invalid network config: kind must be one of mlp, conv",
        ),
    ],
)
def test_invalid_json_contents_raise(tmp_path, change, message):
    _saved(tmp_path)
    _rewrite_config(tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "model")


def test_unparsable_json_raises(tmp_path):
    _saved(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_checkpoint(tmp_path / "model")


def test_expected_kind_mismatch_raises(tmp_path):
    _saved(tmp_path, kind="teacher")
    with pytest.raises(CheckpointError, match="is a teacher checkpoint, expected a student"):
        load_checkpoint(tmp_path / "model", expected_kind="student")


def test_save_rejects_module_of_other_config(tmp_path):
    other = NetworkConfig(input_shape=(3, 3, 2), num_actions=4, hidden_sizes=(8,), aux_heads={"value": (1,)})
    with pytest.raises(CheckpointError, match=r"does not match its network config .*policy_head\.bias: \(4,\)"):
        save_checkpoint(build_network(other), CONFIG, tmp_path / "model")
    assert not list(tmp_path.iterdir())


def test_save_rejects_float64_weights(tmp_path):
    module = build_network(CONFIG).double()
    with pytest.raises(CheckpointError, match=r"non-float32 tensors \['aux\.value\.bias'"):
        save_checkpoint(module, CONFIG, tmp_path / "model")


def test_save_rejects_unserialisable_metadata(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint metadata must be JSON-serialisable"):
        save_checkpoint(build_network(CONFIG), CONFIG, tmp_path / "model", metadata={"when": object()})


def test_save_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of student, teacher, got 'critic'"):
        save_checkpoint(build_network(CONFIG), CONFIG, tmp_path / "model", kind="critic")
