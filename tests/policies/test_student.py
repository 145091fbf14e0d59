"""Tests of students: batched acting, masking, weights in place, specs on rollout backends."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import safetensors.torch
import torch

from policies.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from policies.cost import measure_student
from policies.networks import NetworkConfig, build_network, default_student_config, flops_per_decision
from policies.student import Student, StudentPolicySpec
from sim import make_world
from sim.rollout import NO_ACTION, WorldSpec, make_backend, split_population

WORLDS = ["foraging_v0", "predator_prey_v0", "spread_v0"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run torch on one thread: on a loaded 2-core machine, small ops on two threads ran 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _student(config, *, seed=0, **options):
    torch.manual_seed(seed)
    return Student(build_network(config), **options)


def _grid_config(world, **options):
    return NetworkConfig(input_shape=world.observation_shape, num_actions=world.num_actions, **options)


def _random_obs(batch, shape, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", WORLDS)
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_act_on_world(name, kind):
    world = make_world(name, num_agents=12, seed=0)
    options = {"kind": "conv", "conv_channels": (4,), "kernel_sizes": (3,)} if kind == "conv" else {}
    student = _student(_grid_config(world, **options))
    obs = world.reset(seed=0)
    alive = world.alive.copy()
    alive[::3] = False

    actions = student.act(obs, alive, world.action_mask())

    assert actions.dtype == np.int64
    assert actions.shape == (12,)
    assert (actions[~alive] == NO_ACTION).all()
    assert ((actions[alive] >= 0) & (actions[alive] < world.num_actions)).all()
    assert np.array_equal(actions[alive], student.probs(obs[alive]).argmax(axis=1))


def test_act_steps_world_for_an_episode():
    world = make_world("predator_prey_v0", num_agents=16, seed=1, max_steps=30)
    student = _student(default_student_config(world.observation_shape, world.num_actions))
    obs = world.reset(seed=1)
    while not world.episode_over:
        obs = world.step(student.act(obs, world.alive, world.action_mask())).obs
    assert world.episode_step == 30


def test_act_with_no_alive_row():
    student = _student(NetworkConfig(input_shape=(4,), num_actions=3))
    actions = student.act(np.zeros((3, 4), np.float32), np.zeros(3, bool), None)
    assert actions.tolist() == [NO_ACTION] * 3


def test_masked_actions_are_legal():
    student = _student(NetworkConfig(input_shape=(6,), num_actions=5))
    obs = _random_obs(500, (6,))
    mask = np.random.default_rng(1).random((500, 5)) < 0.4
    mask[np.arange(500), np.random.default_rng(2).integers(0, 5, 500)] = True

    actions = student.act(obs, np.ones(500, bool), mask)
    probs = student.probs(obs, mask)
    logits = student.logits(obs, mask)

    assert mask[np.arange(500), actions].all()
    assert (probs[~mask] == 0).all()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(actions, logits.argmax(axis=1))
    assert (logits[~mask] == np.finfo(np.float32).min).all()


def test_dead_row_without_legal_action_is_allowed():
    student = _student(NetworkConfig(input_shape=(2,), num_actions=3))
    mask = np.array([[False, False, False], [False, True, False]])
    actions = student.act(np.zeros((2, 2), np.float32), np.array([False, True]), mask)
    assert actions.tolist() == [NO_ACTION, 1]


def test_sampling_follows_probs_and_seed():
    config = NetworkConfig(input_shape=(3,), num_actions=4)
    obs = np.repeat(_random_obs(1, (3,)), 20_000, axis=0)
    alive = np.ones(20_000, bool)
    mask = np.tile(np.array([True, True, False, True]), (20_000, 1))
    sampler = _student(config, sample=True, rng=np.random.default_rng(7))
    again = _student(config, sample=True, rng=np.random.default_rng(7))
    other = _student(config, sample=True, rng=np.random.default_rng(8))

    actions = sampler.act(obs, alive, mask)
    frequencies = np.bincount(actions, minlength=4) / actions.size

    assert np.allclose(frequencies, sampler.probs(obs[:1], mask[:1])[0], atol=0.015)
    assert frequencies[2] == 0
    assert np.array_equal(actions, again.act(obs, alive, mask))
    assert not np.array_equal(actions, other.act(obs, alive, mask))


def test_sampling_temperature_sharpens():
    config = NetworkConfig(input_shape=(3,), num_actions=4)
    obs = np.repeat(_random_obs(1, (3,)), 5_000, axis=0)
    alive = np.ones(5_000, bool)
    cold = _student(config, sample=True, temperature=0.01, rng=np.random.default_rng(0))
    greedy = _student(config)
    assert (cold.act(obs, alive, None) == greedy.act(obs[:1], alive[:1], None)[0]).all()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"obs": np.zeros((2, 4), np.float64)}, TypeError, "student: obs must be float32, got float64"),
        ({"obs": [[0.0] * 4]}, TypeError, "student: obs must be a numpy array, got list"),
        ({"obs": np.zeros((2, 5), np.float32)}, ValueError, r"student: obs must have shape \(B, 4\), got \(2, 5\)"),
        ({"obs": np.zeros((2, 4, 1), np.float32)}, ValueError, r"obs must have shape \(B, 4\), got \(2, 4, 1\)"),
        ({"alive": np.ones(2, np.int64)}, TypeError, "alive must be a bool numpy array, got int64"),
        ({"alive": np.ones(3, bool)}, ValueError, r"alive must have shape \(2,\), one entry per obs row, got \(3,\)"),
        ({"action_mask": np.ones((2, 3), np.int8)}, TypeError, "action_mask must be a bool numpy array, got int8"),
        ({"action_mask": np.ones((2, 2), bool)}, ValueError, r"action_mask must have shape \(2, 3\), got \(2, 2\)"),
        (
            {"action_mask": np.array([[True, False, False], [False, False, False]])},
            ValueError,
            "action_mask row 1 allows no action",
        ),
    ],
)
def test_act_rejects_bad_input(arguments, error, message):
    student = _student(NetworkConfig(input_shape=(4,), num_actions=3))
    call = {"obs": np.zeros((2, 4), np.float32), "alive": np.ones(2, bool), "action_mask": None} | arguments
    with pytest.raises(error, match=message):
        student.act(call["obs"], call["alive"], call["action_mask"])


def test_student_rejects_extra_input():
    config = NetworkConfig(input_shape=(4,), num_actions=3, extra_input_size=2)
    with pytest.raises(ValueError, match="a student sees only observations, but its config has extra_input_size=2"):
        Student(build_network(config))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"sample": True}, ValueError, "a sampling student needs rng"),
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
    ],
)
def test_student_rejects_bad_options(options, error, message):
    with pytest.raises(error, match=message):
        Student(build_network(NetworkConfig(input_shape=(4,), num_actions=3)), **options)


def test_student_rejects_foreign_module():
    with pytest.raises(TypeError, match="module must be a PolicyNetwork from build_network, got Linear"):
        Student(torch.nn.Linear(4, 3))


def test_save_and_load_round_trip(tmp_path):
    config = NetworkConfig(input_shape=(5, 5, 3), num_actions=5, kind="conv", conv_channels=(4,), kernel_sizes=(3,))
    student = _student(config)
    student.save(tmp_path / "student", metadata={"step": 10})
    loaded = Student.from_checkpoint(tmp_path / "student")
    obs = _random_obs(64, config.input_shape)
    assert loaded.config == config
    assert np.array_equal(loaded.logits(obs), student.logits(obs))
    assert load_checkpoint(tmp_path / "student").metadata.extra == {"step": 10}


def test_from_checkpoint_rejects_teacher(tmp_path):
    config = NetworkConfig(input_shape=(4,), num_actions=3)
    save_checkpoint(build_network(config), config, tmp_path / "teacher", kind="teacher")
    with pytest.raises(CheckpointError, match="is a teacher checkpoint, expected a student"):
        Student.from_checkpoint(tmp_path / "teacher")


@pytest.mark.parametrize("form", ["numpy", "read_only_numpy", "tensors", "safetensors_bytes"])
def test_set_weights_in_place(form):
    config = NetworkConfig(input_shape=(4,), num_actions=3)
    source, target = _student(config, seed=1), _student(config, seed=2)
    weights = source.get_weights()
    if form == "read_only_numpy":
        for array in weights.values():
            array.flags.writeable = False
    elif form == "tensors":
        weights = dict(source.module.state_dict())
    elif form == "safetensors_bytes":
        weights = safetensors.torch.save(source.module.state_dict())
    parameter = target.module.policy_head.weight

    target.set_weights(weights)

    obs = _random_obs(32, (4,))
    assert np.array_equal(target.logits(obs), source.logits(obs))
    assert target.module.policy_head.weight is parameter


def test_set_weights_rejects_other_config():
    student = _student(NetworkConfig(input_shape=(4,), num_actions=3))
    other = _student(NetworkConfig(input_shape=(4,), num_actions=3, hidden_sizes=(32,)))
    with pytest.raises(CheckpointError, match=r"weights passed to set_weights does not match .*missing tensors \['body\.2"):
        student.set_weights(other.get_weights())


def test_set_weights_rejects_float64():
    student = _student(NetworkConfig(input_shape=(4,), num_actions=3))
    weights = {name: value.astype(np.float64) for name, value in student.get_weights().items()}
    with pytest.raises(CheckpointError, match="non-float32 tensors"):
        student.set_weights(weights)


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        (pickle.dumps({"a": 1}), CheckpointError, "weights bytes are a pickle .* shepherd never unpickles"),
        (b"nonsense bytes", CheckpointError, "weights bytes are not a valid safetensors buffer"),
        ([1, 2], TypeError, "weights must be a state dict of arrays or safetensors bytes, got list"),
        ({"policy_head.weight": [[1.0]]}, TypeError, r"weights\['policy_head.weight'\] must be a numpy array or tensor"),
    ],
)
def test_set_weights_rejects_bad_weights(weights, error, message):
    student = _student(NetworkConfig(input_shape=(4,), num_actions=3))
    with pytest.raises(error, match=message):
        student.set_weights(weights)


def test_cost_figures():
    config = default_student_config((7, 7, 4), 5)
    student = _student(config)
    cost = measure_student(student, batch_size=256, repeats=3)
    assert student.param_count() == cost.params == 196 * 64 + 64 + 64 * 64 + 64 + 64 * 5 + 5
    assert student.flops_per_decision() == cost.flops_per_decision == flops_per_decision(config)
    assert cost.us_per_decision > 0
    assert cost.flops_per_second > 0


def _population(name="foraging_v0", workers=2):
    return split_population(WorldSpec(name, num_agents=10, seed=3), total_agents=40, num_workers=workers)


def test_spec_is_picklable_and_builds_equal_students():
    world = make_world("spread_v0", num_agents=8, seed=0)
    student = _student(default_student_config(world.observation_shape, world.num_actions))
    spec = pickle.loads(pickle.dumps(StudentPolicySpec.from_student(student)))
    built = spec.build(world, seed=5)
    obs = world.reset(seed=0)
    assert np.array_equal(built.act(obs, world.alive, None), student.act(obs, world.alive, None))


def test_spec_from_checkpoint(tmp_path):
    config = NetworkConfig(input_shape=(4,), num_actions=3)
    student = _student(config)
    student.save(tmp_path / "student")
    spec = StudentPolicySpec.from_checkpoint(tmp_path / "student")
    assert spec.config == config
    assert all(np.array_equal(spec.weights[name], value) for name, value in student.get_weights().items())


def test_spec_rejects_world_of_other_shape():
    spec = StudentPolicySpec.from_student(_student(NetworkConfig(input_shape=(4,), num_actions=5)))
    world = make_world("foraging_v0", num_agents=4, seed=0)
    with pytest.raises(ValueError, match=r"foraging_v0: the student takes observations \(4,\) and 5 actions"):
        spec.build(world, seed=0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"config": {"input_shape": (4,)}, "weights": {}}, "config must be a NetworkConfig, got dict"),
        ({"config": NetworkConfig(input_shape=(4,), num_actions=3), "weights": [1]}, "weights must be a state dict"),
    ],
)
def test_spec_rejects_bad_fields(arguments, message):
    with pytest.raises(TypeError, match=message):
        StudentPolicySpec(**arguments)


def _reference_actions(student, trajectories):
    """Actions ``student`` takes on every recorded step of ``trajectories``."""
    return [
        np.stack([student.act(obs, alive, None) for obs, alive in zip(trajectory.obs, trajectory.alive)])
        for trajectory in trajectories
    ]


def test_serial_backend_set_weights_changes_actions():
    world = make_world("foraging_v0", num_agents=10, seed=0)
    config = default_student_config(world.observation_shape, world.num_actions)
    first, second = _student(config, seed=1), _student(config, seed=2)
    with make_backend("serial", _population(), StudentPolicySpec.from_student(first)) as backend:
        before = backend.sample(3)
        backend.set_weights(second.get_weights())
        after = backend.sample(3)
    for trajectory, expected in zip(before, _reference_actions(first, before)):
        assert np.array_equal(trajectory.actions, expected)
    for trajectory, expected in zip(after, _reference_actions(second, after)):
        assert np.array_equal(trajectory.actions, expected)


def test_sampling_spec_matches_across_backends(ray_session):
    world = make_world("predator_prey_v0", num_agents=10, seed=0)
    config = default_student_config(world.observation_shape, world.num_actions)
    spec = StudentPolicySpec.from_student(_student(config, seed=1), sample=True, seed=4)
    new_weights = _student(config, seed=2).get_weights()
    shards = _population("predator_prey_v0")

    with make_backend("serial", shards, spec) as serial, make_backend(
        "ray", shards, spec, num_cpus_per_worker=0.5
    ) as remote:
        serial.set_weights(new_weights)
        remote.set_weights(new_weights)
        expected, received = serial.sample(4), remote.sample(4)

    for serial_trajectory, remote_trajectory in zip(expected, received):
        assert np.array_equal(serial_trajectory.actions, remote_trajectory.actions)
