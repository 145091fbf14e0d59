"""Parquet dataset shards, the manifest, resumable writes and verification."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from distill.dataset import (
    DatasetError,
    DatasetWriter,
    LabelledBatch,
    load_dataset,
    read_manifest,
    sha256_file,
    verify_dataset,
)

OBS_SHAPE = (3, 3, 2)


def make_batch(rows: int, *, iteration: int = 0, seed: int = 0, with_mask: bool = True) -> LabelledBatch:
    rng = np.random.default_rng(seed)
    probs = rng.random((rows, 5)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    return LabelledBatch(
        obs=rng.random((rows, *OBS_SHAPE)).astype(np.float32),
        agent_ids=np.arange(rows, dtype=np.int64) + 100 * seed,
        world_steps=np.full(rows, 7, dtype=np.int64),
        probs=probs,
        teacher_ids=["planner/spread_v0"] * rows,
        teacher_versions=["3"] * rows,
        iteration=iteration,
        aux={"goal": rng.random((rows, 2)).astype(np.float32), "value": rng.random(rows).astype(np.float32)},
        action_mask=np.ones((rows, 5), dtype=bool) if with_mask else None,
    )


def writer(directory, scenario_hash="abc123"):
    return DatasetWriter(directory, scenario_hash=scenario_hash, code_version="0.1.0+test")


def test_round_trip_keeps_every_column(tmp_path):
    batch = make_batch(10)
    writer(tmp_path).append(batch)
    loaded = load_dataset(tmp_path)

    np.testing.assert_array_equal(loaded.obs, batch.obs)
    np.testing.assert_array_equal(loaded.probs, batch.probs)
    np.testing.assert_array_equal(loaded.agent_ids, batch.agent_ids)
    np.testing.assert_array_equal(loaded.world_steps, batch.world_steps)
    np.testing.assert_array_equal(loaded.aux["goal"], batch.aux["goal"])
    np.testing.assert_array_equal(loaded.aux["value"], batch.aux["value"])
    np.testing.assert_array_equal(loaded.action_mask, batch.action_mask)
    assert loaded.iterations.tolist() == [0] * 10
    assert loaded.teacher_ids.tolist() == ["planner/spread_v0"] * 10


def test_manifest_records_hashes_and_provenance(tmp_path):
    info = writer(tmp_path).append(make_batch(4, iteration=2))
    manifest = read_manifest(tmp_path)
    assert manifest["scenario_hash"] == "abc123"
    assert manifest["code_version"] == "0.1.0+test"
    assert manifest["rows"] == 4
    assert manifest["shards"][0]["sha256"] == sha256_file(tmp_path / info.file)
    assert manifest["shards"][0]["iteration"] == 2
    assert manifest["shards"][0]["teachers"] == ["planner/spread_v0@3"]
    assert manifest["schema"]["obs_shape"] == list(OBS_SHAPE)


def test_resumed_writer_continues_after_last_shard(tmp_path):
    first = writer(tmp_path)
    first.append(make_batch(3, seed=0))
    first.append(make_batch(3, seed=1))

    resumed = writer(tmp_path)
    assert resumed.rows == 6
    info = resumed.append(make_batch(2, seed=2, iteration=1))
    assert info.file == "shard-00002.parquet"
    assert load_dataset(tmp_path).size == 8


def test_interrupted_write_leaves_no_shard_in_manifest(tmp_path):
    dataset = writer(tmp_path)
    dataset.append(make_batch(3))
    # A crash after the shard's rename but before the manifest update leaves an orphan,
    # and one during the write leaves a temporary file.
    (tmp_path / "shard-00001.parquet").write_bytes(b"half a shard")
    (tmp_path / ".shard-00002.parquet.x1.tmp").write_bytes(b"partial")
    assert verify_dataset(tmp_path) == []

    resumed = writer(tmp_path)
    assert not (tmp_path / ".shard-00002.parquet.x1.tmp").exists()
    info = resumed.append(make_batch(2, seed=5))
    assert info.file == "shard-00001.parquet"
    assert load_dataset(tmp_path).size == 5


def test_verify_names_shard_with_flipped_byte(tmp_path):
    dataset = writer(tmp_path)
    dataset.append(make_batch(3, seed=0))
    dataset.append(make_batch(3, seed=1))
    path = tmp_path / "shard-00001.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    problems = verify_dataset(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("shard-00001.parquet: sha256 ")
    with pytest.raises(DatasetError, match=r"failed verification: shard-00001.parquet: sha256"):
        load_dataset(tmp_path)


def test_verify_names_missing_shard(tmp_path):
    writer(tmp_path).append(make_batch(3))
    (tmp_path / "shard-00000.parquet").unlink()
    assert verify_dataset(tmp_path) == ["shard-00000.parquet: missing"]


def test_other_scenario_is_rejected(tmp_path):
    writer(tmp_path, "abc123").append(make_batch(3))
    with pytest.raises(DatasetError, match=r"scenario hash abc123, not def456; write to a new directory"):
        writer(tmp_path, "def456")


def test_shape_change_is_rejected(tmp_path):
    dataset = writer(tmp_path)
    dataset.append(make_batch(3))
    with pytest.raises(DatasetError, match=r"differ from the dataset's"):
        dataset.append(dataclasses.replace(make_batch(3), aux={}))


def test_nan_labels_are_refused(tmp_path):
    batch = make_batch(3)
    batch.probs[1, 0] = np.nan
    with pytest.raises(DatasetError, match=r"refusing to store NaN or inf labels"):
        writer(tmp_path).append(batch)
    assert not list(tmp_path.glob("shard-*.parquet"))


def test_column_length_mismatch_is_refused(tmp_path):
    batch = make_batch(3)
    broken = dataclasses.replace(batch, agent_ids=np.arange(2))
    with pytest.raises(DatasetError, match=r"agent_ids must have shape \(3,\) like obs, got \(2,\)"):
        writer(tmp_path).append(broken)


def test_missing_manifest_is_reported(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest.json not found; is .* a shepherd dataset directory"):
        verify_dataset(tmp_path)


def test_foreign_manifest_is_reported(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DatasetError, match=r"is not a shepherd dataset manifest"):
        read_manifest(tmp_path)
