"""Tests of ONNX export: onnxruntime acts as torch does, at batch 1 and many, with masks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from policies.export import CONFIG_METADATA_KEY, OnnxPolicy, OnnxPolicySpec, export_onnx
from policies.networks import NetworkConfig, build_network, default_student_config
from policies.student import Student, StudentPolicySpec
from sim import make_world
from sim.rollout import NO_ACTION, WorldSpec, make_backend, split_population

CONFIGS = {
    "mlp": NetworkConfig(input_shape=(5, 5, 3), num_actions=5, hidden_sizes=(32, 32)),
    "conv": NetworkConfig(
        input_shape=(5, 5, 3), num_actions=5, kind="conv", conv_channels=(8, 8), kernel_sizes=(3, 3), hidden_sizes=(16,)
    ),
    "aux_tanh": NetworkConfig(input_shape=(6,), num_actions=4, hidden_sizes=(8,), aux_heads={"value": (1,)}, activation="tanh"),
}


def _student(config, seed=0):
    torch.manual_seed(seed)
    return Student(build_network(config))


def _inputs(config, batch, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((batch, *config.input_shape)).astype(np.float32)
    mask = rng.random((batch, config.num_actions)) < 0.5
    mask[np.arange(batch), rng.integers(0, config.num_actions, batch)] = True
    return obs, mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each config's student and the path of its ONNX export."""
    directory = tmp_path_factory.mktemp("onnx")
    students = {}
    for name, config in CONFIGS.items():
        student = _student(config)
        students[name] = (student, export_onnx(student, directory / f"{name}.onnx"))
    return students


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("batch", [1, 1000])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
def test_onnx_matches_torch(exported, name, batch, masked):
    student, path = exported[name]
    policy = OnnxPolicy(path)
    obs, mask = _inputs(student.config, batch, seed=batch)
    mask = mask if masked else None
    alive = np.ones(batch, dtype=bool)

    onnx_actions = policy.act(obs, alive, mask)
    torch_actions = student.act(obs, alive, mask)

    assert onnx_actions.dtype == np.int64
    assert np.array_equal(onnx_actions, torch_actions)
    assert np.allclose(policy.logits(obs, mask), student.logits(obs, mask), rtol=1e-5, atol=1e-5)


def test_batch_axis_is_dynamic(exported):
    _, path = exported["mlp"]
    model = onnx.load(path)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_config_travels_in_metadata(exported):
    student, path = exported["conv"]
    properties = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert NetworkConfig.from_dict(json.loads(properties[CONFIG_METADATA_KEY])) == student.config
    assert OnnxPolicy(path).config == student.config


def test_dead_rows_get_no_action(exported):
    student, path = exported["mlp"]
    obs, mask = _inputs(student.config, 6)
    alive = np.array([True, False, True, False, False, True])
    mask[1] = False
    actions = OnnxPolicy(path).act(obs, alive, mask)
    assert (actions[~alive] == NO_ACTION).all()
    assert np.array_equal(actions[alive], student.act(obs, alive, mask)[alive])
    assert OnnxPolicy(path).act(obs, np.zeros(6, bool), None).tolist() == [NO_ACTION] * 6


def test_onnx_policy_rolls_out_like_student(tmp_path):
    world = make_world("spread_v0", num_agents=10, seed=0)
    student = _student(default_student_config(world.observation_shape, world.num_actions))
    path = export_onnx(student, tmp_path / "student.onnx")
    shards = split_population(WorldSpec("spread_v0", num_agents=10, seed=2), total_agents=20, num_workers=1)

    with make_backend("serial", shards, OnnxPolicySpec(str(path), num_threads=1)) as backend:
        onnx_trajectories = backend.sample(5)
    with make_backend("serial", shards, StudentPolicySpec.from_student(student)) as backend:
        torch_trajectories = backend.sample(5)

    for onnx_trajectory, torch_trajectory in zip(onnx_trajectories, torch_trajectories):
        assert np.array_equal(onnx_trajectory.actions, torch_trajectory.actions)


def test_export_leaves_student_usable(exported):
    student, _ = exported["mlp"]
    obs, _ = _inputs(student.config, 3)
    assert student.act(obs, np.ones(3, bool), None).shape == (3,)
    assert not student.module.training


def test_export_rejects_non_student(tmp_path):
    with pytest.raises(TypeError, match="export_onnx takes a Student, got PolicyNetwork"):
        export_onnx(build_network(CONFIGS["mlp"]), tmp_path / "model.onnx")


def test_onnx_without_metadata_raises(tmp_path):
    path = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["obs"], ["logits"])],
        "plain",
        [onnx.helper.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, ["batch", 3])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="has no 'shepherd.network' metadata; export the student with export_onnx"):
        OnnxPolicy(path)


@pytest.mark.parametrize(
    ("obs", "error", "message"),
    [
        (np.zeros((2, 5, 5, 3), np.float64), TypeError, "onnx policy: obs must be float32, got float64"),
        (np.zeros((2, 5, 5), np.float32), ValueError, r"onnx policy: obs must have shape \(B, 5, 5, 3\), got \(2, 5, 5\)"),
    ],
)
def test_onnx_policy_rejects_bad_obs(exported, obs, error, message):
    _, path = exported["mlp"]
    with pytest.raises(error, match=message):
        OnnxPolicy(path).act(obs, np.ones(2, bool), None)


def test_onnx_policy_rejects_row_without_legal_action(exported):
    student, path = exported["mlp"]
    obs, mask = _inputs(student.config, 2)
    mask[1] = False
    with pytest.raises(ValueError, match="action_mask row 1 allows no action"):
        OnnxPolicy(path).act(obs, np.ones(2, bool), mask)


def test_onnx_spec_rejects_world_of_other_shape(exported):
    _, path = exported["aux_tanh"]
    world = make_world("foraging_v0", num_agents=4, seed=0)
    with pytest.raises(ValueError, match=r"foraging_v0: .*aux_tanh\.onnx takes observations \(6,\) and 4 actions"):
        OnnxPolicySpec(str(path)).build(world, seed=0)
