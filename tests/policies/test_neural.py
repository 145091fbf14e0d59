"""Tests of the neural teacher, privileged features, training from labels and cost measurement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from policies.checkpoint import CheckpointError, save_checkpoint
from policies.cost import matmul_flops_per_second, measure_neural_teacher
from policies.networks import NetworkConfig, build_network, flops_per_decision
from policies.features import NearestOffsets
from policies.neural import NeuralTeacher, NeuralTeacherSpec
from policies.training import (
    LabelledData,
    TrainingConfig,
    collect_teacher_labels,
    make_neural_teacher,
    train_network,
)
from policies.teacher import LabelInputError, LabelRequest, Teacher, softmax
from sim import make_world

OBS_SHAPE = (3, 3, 2)
CONFIG = NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, hidden_sizes=(16, 16), aux_heads={"value": (1,)})


class _TowardFood(Teacher):
    """A privileged teacher for foraging_v0: mostly steps toward the nearest food item."""

    teacher_id = "test/toward_food"
    version = "1"
    num_actions = 5
    requires_state = True

    def _label(self, request):
        own = request.state["positions"][request.rows]  # (B, 2)
        offsets = request.state["food_positions"][None, :, :] - own[:, None, :]  # (B, F, 2)
        nearest = (offsets**2).sum(axis=2).argmin(axis=1)
        dy, dx = offsets[np.arange(len(own)), nearest].T
        vertical = np.where(dy < 0, 1, 2)
        horizontal = np.where(dx < 0, 3, 4)
        actions = np.where(np.abs(dy) >= np.abs(dx), vertical, horizontal)
        actions[(dy == 0) & (dx == 0)] = 0
        probs = np.full((len(own), 5), 0.025, dtype=np.float32)
        probs[np.arange(len(own)), actions] = 0.9
        return probs, {}


def _teacher_checkpoint(tmp_path, config=CONFIG, *, metadata=None, seed=0):
    torch.manual_seed(seed)
    module = build_network(config)
    save_checkpoint(module, config, tmp_path / "teacher", kind="teacher", metadata=metadata or {})
    return module


def _obs(batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *OBS_SHAPE)).astype(np.float32)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run torch on one thread: on a loaded 2-core machine, small ops on two threads ran 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The teacher.


def test_labels_are_softmax_of_network(tmp_path):
    module = _teacher_checkpoint(tmp_path, metadata={"teacher_id": "neural/big", "version": "7"})
    teacher = NeuralTeacherSpec(str(tmp_path / "teacher"), temperature=2.0).build()
    obs = _obs(10)
    mask = np.ones((10, 5), bool)
    mask[:, 3] = False

    labels = teacher.label(LabelRequest(obs=obs, action_mask=mask))

    with torch.no_grad():
        logits, aux = module(torch.from_numpy(obs))
    assert np.allclose(labels.probs, softmax(logits.numpy(), temperature=2.0, mask=mask), atol=1e-6)
    assert (labels.probs[:, 3] == 0).all()
    assert np.allclose(labels.aux["value"], aux["value"].numpy(), atol=1e-6)
    assert (labels.teacher_id, labels.teacher_version) == ("neural/big", "7")


def test_identity_defaults_from_checkpoint(tmp_path):
    _teacher_checkpoint(tmp_path)
    teacher = NeuralTeacher.from_checkpoint(tmp_path / "teacher.safetensors")
    digest = json.loads((tmp_path / "teacher.json").read_text())["weights_sha256"]
    assert teacher.teacher_id == "neural/teacher"
    assert teacher.version == digest[:12]
    assert not teacher.requires_state
    assert teacher.aux_shapes == {"value": (1,)}


def test_label_many_runs_one_forward_pass(tmp_path):
    _teacher_checkpoint(tmp_path)
    teacher = NeuralTeacherSpec(str(tmp_path / "teacher")).build()
    calls = []
    teacher.module.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    mask = np.ones((4, 5), bool)
    mask[:, 0] = False
    requests = [LabelRequest(obs=_obs(3, 1)), LabelRequest(obs=_obs(4, 2), action_mask=mask), LabelRequest(obs=_obs(2, 3))]

    together = teacher.label_many(requests)
    separate = [teacher.label(request) for request in requests]

    assert calls[0] == 9
    assert len(calls) == 1 + len(requests)
    for joined, alone in zip(together, separate):
        assert np.allclose(joined.probs, alone.probs, atol=1e-6)
        assert np.allclose(joined.aux["value"], alone.aux["value"], atol=1e-6)
    assert (together[1].probs[:, 0] == 0).all()
    assert teacher.cost().labels == 18


def test_cost_figures(tmp_path):
    _teacher_checkpoint(tmp_path)
    teacher = NeuralTeacherSpec(str(tmp_path / "teacher")).build()
    cost = measure_neural_teacher(teacher, batch_size=64, repeats=3)
    assert teacher.param_count() == cost.params == sum(p.numel() for p in teacher.module.parameters())
    assert teacher.flops_per_label() == cost.flops_per_decision == flops_per_decision(CONFIG)
    assert cost.batch_size == 64
    assert cost.us_per_decision > 0
    assert teacher.describe()["params"] == cost.params


def test_matmul_ceiling_is_positive():
    assert matmul_flops_per_second(rows=64, inner=32, columns=32, repeats=3) > 0


@pytest.mark.parametrize(
    ("request_options", "message"),
    [
        ({"obs": np.zeros((2, *OBS_SHAPE), np.float64)}, "obs must be float32, got float64"),
        ({"obs": np.zeros((2, 3, 3, 3), np.float32)}, r"obs must have shape \(B, 3, 3, 2\), got \(2, 3, 3, 3\)"),
        (
            {"obs": np.zeros((2, *OBS_SHAPE), np.float32), "action_mask": np.ones((2, 4), bool)},
            r"action_mask must be a bool array of shape \(2, 5\)",
        ),
    ],
)
def test_bad_request_raises(tmp_path, request_options, message):
    _teacher_checkpoint(tmp_path)
    teacher = NeuralTeacherSpec(str(tmp_path / "teacher")).build()
    with pytest.raises(LabelInputError, match=message):
        teacher.label(LabelRequest(**request_options))


def test_spec_rejects_cuda_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    _teacher_checkpoint(tmp_path)
    with pytest.raises(RuntimeError, match=r"requests device 'cuda', but torch\.cuda\.is_available\(\) is False on this machine; use device='cpu'"):
        NeuralTeacherSpec(str(tmp_path / "teacher"), device="cuda").build()


def test_student_checkpoint_is_not_a_teacher(tmp_path):
    save_checkpoint(build_network(CONFIG), CONFIG, tmp_path / "student", kind="student")
    with pytest.raises(CheckpointError, match="is a student checkpoint, expected a teacher"):
        NeuralTeacher.from_checkpoint(tmp_path / "student")


def test_extra_input_without_features_raises(tmp_path):
    config = NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, extra_input_size=6)
    _teacher_checkpoint(tmp_path, config)
    with pytest.raises(CheckpointError, match="extra input of width 6, but no privileged features were given"):
        NeuralTeacher.from_checkpoint(tmp_path / "teacher")


def test_features_of_other_width_raise(tmp_path):
    config = NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, extra_input_size=6)
    features = NearestOffsets(point_sets=("food_positions",), k=3)
    _teacher_checkpoint(tmp_path, config, metadata={"privileged_features": features.to_dict()})
    with pytest.raises(CheckpointError, match="the privileged features have width 9, but the network takes an extra input of width 6"):
        NeuralTeacher.from_checkpoint(tmp_path / "teacher")


def test_unknown_feature_kind_raises(tmp_path):
    _teacher_checkpoint(tmp_path, metadata={"privileged_features": {"kind": "global_map"}})
    with pytest.raises(CheckpointError, match="invalid privileged_features in the metadata: unknown privileged feature kind 'global_map'"):
        NeuralTeacher.from_checkpoint(tmp_path / "teacher")


def test_teacher_rejects_bad_temperature(tmp_path):
    _teacher_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="temperature must be a finite number > 0, got -1"):
        NeuralTeacher.from_checkpoint(tmp_path / "teacher", temperature=-1)


# Privileged features.


def _expected_offset(dy, dx):
    return [math.copysign(math.log1p(abs(dy)), dy), math.copysign(math.log1p(abs(dx)), dx), 1.0]


def test_nearest_offsets_by_hand():
    state = {
        "positions": np.array([[0, 0], [0, 3], [5, 5]]),
        "team_ids": np.array([0, 0, 1]),
        "alive": np.array([True, True, True]),
        "food_positions": np.array([[4, 4], [1, 0]]),
    }
    features = NearestOffsets(point_sets=("food_positions", "team:0", "team:1"), k=2)

    values = features.compute(np.array([0]), state).reshape(3, 2, 3)

    assert features.size == 18
    assert np.allclose(values[0], [_expected_offset(1, 0), _expected_offset(4, 4)])
    assert np.allclose(values[1], [_expected_offset(0, 3), [0, 0, 0]])
    assert np.allclose(values[2], [_expected_offset(5, 5), [0, 0, 0]])


def test_nearest_offsets_skip_dead_agents_and_self():
    state = {
        "positions": np.array([[0, 0], [0, 1], [0, 2], [9, 9]]),
        "team_ids": np.array([0, 0, 0, 0]),
        "alive": np.array([True, False, True, True]),
    }
    features = NearestOffsets(point_sets=("team:0",), k=3)
    values = features.compute(np.array([0, 2]), state).reshape(2, 3, 3)
    assert np.allclose(values[0], [_expected_offset(0, 2), _expected_offset(9, 9), [0, 0, 0]])
    assert np.allclose(values[1], [_expected_offset(0, -2), _expected_offset(9, 7), [0, 0, 0]])


@pytest.mark.parametrize(
    ("name", "point_sets"),
    [
        ("foraging_v0", ("food_positions", "team:0")),
        ("predator_prey_v0", ("team:0", "team:1")),
        ("spread_v0", ("target_positions", "team:0")),
    ],
)
def test_nearest_offsets_for_native_worlds(name, point_sets):
    world = make_world(name, num_agents=12, seed=0)
    world.reset(seed=0)
    features = NearestOffsets.for_state(world.state(), k=2)
    values = features.compute(np.arange(12), world.state())
    assert features.point_sets == point_sets
    assert values.shape == (12, features.size)
    assert values.dtype == np.float32
    assert np.isfinite(values).all()


def test_nearest_offsets_dict_round_trip():
    features = NearestOffsets(point_sets=("food_positions", "team:0"), k=3)
    assert NearestOffsets.from_dict(json.loads(json.dumps(features.to_dict()))) == features


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"alive": np.ones(2, bool)}, r"the world state has no 'positions' array; its keys are \['alive'\]"),
        ({"positions": np.zeros((2, 2))}, "the world state has no 'food_positions' array"),
        ({"positions": np.zeros((2, 3)), "food_positions": np.zeros((1, 2))}, r"state\['positions'\] must have shape \(N, 2\)"),
        ({"positions": np.zeros((2, 2)), "food_positions": np.zeros(4)}, r"state\['food_positions'\] must have shape \(M, 2\)"),
    ],
)
def test_nearest_offsets_reject_bad_state(state, message):
    features = NearestOffsets(point_sets=("food_positions",), k=1)
    with pytest.raises(LabelInputError, match=message):
        features.compute(np.array([0]), state)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"point_sets": ()}, "NearestOffsets needs at least one point set, got none"),
        ({"point_sets": ("",)}, "point set names must be non-empty strings, got ''"),
        ({"point_sets": ("team:prey",)}, "team point sets must read 'team:<index>', such as 'team:0', got 'team:prey'"),
        ({"point_sets": ("team:0",), "k": 0}, "NearestOffsets.k must be an integer >= 1, got 0"),
    ],
)
def test_nearest_offsets_reject_bad_fields(arguments, message):
    with pytest.raises(ValueError, match=message):
        NearestOffsets(**arguments)


def test_from_dict_rejects_unknown_key():
    with pytest.raises(ValueError, match="unknown NearestOffsets key.s. radius"):
        NearestOffsets.from_dict({"kind": "nearest_offsets", "point_sets": ["team:0"], "radius": 3})


def test_privileged_teacher_needs_state(tmp_path):
    features = NearestOffsets(point_sets=("team:0",), k=1)
    config = NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, extra_input_size=features.size)
    _teacher_checkpoint(tmp_path, config, metadata={"privileged_features": features.to_dict()})
    teacher = NeuralTeacherSpec(str(tmp_path / "teacher")).build()
    assert teacher.requires_state
    with pytest.raises(LabelInputError, match="is a privileged teacher: the request needs rows and state"):
        teacher.label(LabelRequest(obs=_obs(2)))
    with pytest.raises(ValueError, match="reads privileged state, so random observations cannot be labelled"):
        measure_neural_teacher(teacher, batch_size=4, repeats=1)


# Training.


def _linear_labels(size, seed=0):
    """States labelled by the argmax of a fixed linear map, with soft probabilities."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((size, *OBS_SHAPE)).astype(np.float32)
    weights = np.random.default_rng(99).standard_normal((math.prod(OBS_SHAPE), 5))
    best = (obs.reshape(size, -1) @ weights).argmax(axis=1)
    probs = np.full((size, 5), 0.05, dtype=np.float32)
    probs[np.arange(size), best] = 0.8
    value = obs.reshape(size, -1)[:, :1].copy()
    return LabelledData(obs=obs, probs=probs, aux={"value": value})


def test_train_network_fits_labels():
    data = _linear_labels(3000)
    training = TrainingConfig(epochs=15, batch_size=128, learning_rate=3e-3)
    module, report = train_network(CONFIG, data, training=training)
    assert report.validation_agreement > 0.9
    assert report.train_agreement > 0.9
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert not module.training


def test_train_network_respects_mask():
    data = _linear_labels(500)
    mask = np.ones((500, 5), bool)
    mask[:, 4] = False
    probs = data.probs.copy()
    probs[:, 4] = 0
    probs /= probs.sum(axis=1, keepdims=True)
    masked = LabelledData(obs=data.obs, probs=probs, action_mask=mask, aux=data.aux)
    module, report = train_network(CONFIG, masked, training=TrainingConfig(epochs=2))
    assert all(math.isfinite(loss) for loss in report.epoch_losses)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (NetworkConfig(input_shape=(18,), num_actions=5, aux_heads={"value": (1,)}), r"data\.obs has states of shape \(3, 3, 2\)"),
        (NetworkConfig(input_shape=OBS_SHAPE, num_actions=4, aux_heads={"value": (1,)}), "data.probs has 5 actions, but the network has 4"),
        (
            NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, extra_input_size=3, aux_heads={"value": (1,)}),
            "data.features has width 0, but the network takes an extra input of width 3",
        ),
        (NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, aux_heads={"goal": (2,)}), "auxiliary head 'goal', but data.aux has no such target"),
        (NetworkConfig(input_shape=OBS_SHAPE, num_actions=5, aux_heads={"value": (2,)}), r"data\.aux\['value'\] has per-state shape \(1,\), expected \(2,\)"),
    ],
)
def test_train_network_rejects_data_of_other_shape(config, message):
    with pytest.raises(ValueError, match=message):
        train_network(config, _linear_labels(10))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"obs": np.zeros((2, 3))}, TypeError, "LabelledData.obs must be a float32 numpy array, got float64"),
        ({"probs": np.ones((3, 2), np.float32) / 2}, ValueError, r"LabelledData.probs must have shape \(2, A\)"),
        ({"probs": np.ones((2, 2), np.float32)}, ValueError, "LabelledData.probs row 0 sums to 2.0000, not 1"),
        ({"features": np.zeros((3, 4), np.float32)}, ValueError, r"LabelledData.features must be float32 of shape \(2, F\)"),
        ({"action_mask": np.ones((2, 3), bool)}, ValueError, r"LabelledData.action_mask must be bool of shape \(2, 2\)"),
        ({"aux": {"value": np.zeros((3, 1))}}, ValueError, r"LabelledData.aux\['value'\] must have 2 rows"),
    ],
)
def test_labelled_data_rejects_bad_arrays(arguments, error, message):
    fields = {"obs": np.zeros((2, 3), np.float32), "probs": np.full((2, 2), 0.5, np.float32)} | arguments
    with pytest.raises(error, match=message):
        LabelledData(**fields)


def test_labelled_data_concatenate_rejects_mixed_fields():
    with_mask = LabelledData(obs=np.zeros((1, 2), np.float32), probs=np.ones((1, 1), np.float32), action_mask=np.ones((1, 1), bool))
    without = LabelledData(obs=np.zeros((1, 2), np.float32), probs=np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="action_mask is set in some parts and None in others"):
        LabelledData.concatenate([with_mask, without])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epochs": 0}, "TrainingConfig.epochs must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "TrainingConfig.batch_size must be an integer >= 1, got 2.5"),
        ({"learning_rate": 0.0}, "TrainingConfig.learning_rate must be > 0, got 0.0"),
        ({"validation_fraction": 1.0}, r"TrainingConfig.validation_fraction must lie in \[0, 1\), got 1.0"),
    ],
)
def test_training_config_rejects_bad_values(arguments, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**arguments)


# From a privileged teacher to a neural teacher.


def test_make_neural_teacher_from_privileged_teacher(tmp_path):
    world = make_world("foraging_v0", num_agents=20, seed=0, max_steps=50)
    world.reset(seed=0)
    features = NearestOffsets(point_sets=("food_positions",), k=1)
    source = _TowardFood()
    data = collect_teacher_labels(source, world, steps=150, seed=0, features=features)
    training = TrainingConfig(epochs=25, batch_size=128, learning_rate=3e-3)

    spec, report = make_neural_teacher(
        data, tmp_path / "neural", teacher_id="neural/toward_food", features=features, hidden_sizes=(64, 64), training=training
    )
    teacher = spec.build()

    # Compare both teachers on states from another episode.
    held_out = collect_teacher_labels(source, world, steps=20, seed=1)
    obs = world.reset(seed=1)
    state, rows = world.state(), np.flatnonzero(world.alive)
    request = LabelRequest(obs=obs[rows], rows=rows, state=state)
    agreement = (teacher.label(request).probs.argmax(axis=1) == source.label(request).probs.argmax(axis=1)).mean()

    assert data.size == 150 * 20
    assert data.features.shape == (3000, 3)
    assert held_out.features is None
    assert teacher.requires_state
    assert teacher.teacher_id == "neural/toward_food"
    assert report.validation_agreement > 0.85
    assert agreement > 0.85
    assert json.loads((tmp_path / "neural.json").read_text())["metadata"]["training"]["samples"] == 3000


def test_make_neural_teacher_rejects_feature_mismatch(tmp_path):
    with pytest.raises(ValueError, match="features and data.features must both be set or both be None"):
        make_neural_teacher(
            _linear_labels(10), tmp_path / "neural", teacher_id="neural/x", features=NearestOffsets(point_sets=("team:0",))
        )


def test_collect_teacher_labels_rejects_bad_steps():
    world = make_world("foraging_v0", num_agents=4, seed=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        collect_teacher_labels(_TowardFood(), world, steps=0)
