"""TeacherPolicySpec: a teacher driving a population through the rollout backends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sim
from policies.planners import PlannerSpec
from policies.teacher import LabelInputError, Teacher
from policies.teacher_policy import TeacherPolicy, TeacherPolicySpec
from sim.rollout import NO_ACTION, SerialBackend, WorldSpec, make_backend, split_population

TRAJECTORY_ARRAYS = ("obs", "actions", "rewards", "terminated", "truncated", "alive", "episode_start", "next_obs")


class FixedTeacher(Teacher):
    """Returns the same probability row for every state, without privileged context."""

    teacher_id = "test/fixed"
    version = "1"
    num_actions = 5

    def __init__(self, row) -> None:
        super().__init__()
        self.row = np.asarray(row, dtype=np.float32)

    def _label(self, request):
        return np.tile(self.row, (request.size, 1)), {}


@dataclasses.dataclass(frozen=True)
class FixedTeacherSpec:
    row: tuple[float, ...] = (0.2, 0.8, 0.0, 0.0, 0.0)

    def build(self) -> FixedTeacher:
        return FixedTeacher(self.row)


@dataclasses.dataclass(frozen=True)
class NotATeacherSpec:
    def build(self) -> object:
        return object()


@dataclasses.dataclass(frozen=True)
class ThreeActionTeacherSpec:
    def build(self) -> FixedTeacher:
        teacher = FixedTeacher((0.5, 0.5, 0.0))
        teacher.num_actions = 3
        return teacher


def predator_prey(num_agents: int = 16, seed: int = 0, max_steps: int = 12) -> WorldSpec:
    return WorldSpec("predator_prey_v0", num_agents=num_agents, seed=seed, options={"max_steps": max_steps})


def assert_same_trajectories(first: list[sim.Trajectory], second: list[sim.Trajectory]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.world_seed == b.world_seed
        for field in TRAJECTORY_ARRAYS:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_greedy_actions_are_the_labels_argmax():
    world = sim.make_world("foraging_v0", num_agents=12, seed=0)
    obs = world.reset()
    policy = TeacherPolicySpec(PlannerSpec.from_world_spec(WorldSpec("foraging_v0", num_agents=12), depth=2)).build(
        world, seed=0
    )
    actions = policy.act(obs, world.alive, None)
    assert actions.dtype == np.int64
    np.testing.assert_array_equal(actions, policy.last_labels.probs.argmax(axis=1))


def test_only_alive_rows_are_labelled():
    world = sim.make_world("predator_prey_v0", num_agents=12, seed=0)
    obs = world.reset()
    policy = TeacherPolicySpec(PlannerSpec.from_world_spec(predator_prey(num_agents=12), depth=1)).build(world, seed=0)
    alive = np.ones(12, dtype=bool)
    alive[[2, 7]] = False
    actions = policy.act(obs, alive, None)
    assert (actions[[2, 7]] == NO_ACTION).all()
    assert (actions[alive] >= 0).all()
    assert policy.last_labels.size == 10


def test_no_alive_rows_gives_no_actions():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    obs = world.reset()
    policy = TeacherPolicySpec(FixedTeacherSpec()).build(world, seed=0)
    actions = policy.act(obs, np.zeros(4, dtype=bool), None)
    assert (actions == NO_ACTION).all()
    assert policy.last_labels is None


def test_sampling_follows_probabilities():
    world = sim.make_world("spread_v0", num_agents=2000, seed=0)
    obs = world.reset()
    policy = TeacherPolicySpec(FixedTeacherSpec(), mode="sample").build(world, seed=3)
    actions = policy.act(obs, world.alive, None)
    assert set(np.unique(actions).tolist()) == {0, 1}
    assert 0.75 < (actions == 1).mean() < 0.85


def test_sampling_never_takes_masked_actions():
    world = sim.make_world("spread_v0", num_agents=500, seed=0)
    obs = world.reset()
    mask = np.ones((500, 5), dtype=bool)
    mask[:, 1] = False
    spec = TeacherPolicySpec(PlannerSpec.from_world_spec(WorldSpec("spread_v0", num_agents=500), depth=1), mode="sample")
    actions = spec.build(world, seed=0).act(obs, world.alive, mask)
    assert not (actions == 1).any()


def test_sampling_is_reproducible_from_seeds():
    world = sim.make_world("spread_v0", num_agents=200, seed=0)
    obs = world.reset()

    def draw(spec_seed: int, world_seed: int) -> np.ndarray:
        policy = TeacherPolicySpec(FixedTeacherSpec(), mode="sample", seed=spec_seed).build(world, seed=world_seed)
        return policy.act(obs, world.alive, None)

    np.testing.assert_array_equal(draw(0, 0), draw(0, 0))
    assert not np.array_equal(draw(0, 0), draw(1, 0))
    assert not np.array_equal(draw(0, 0), draw(0, 1))


def test_describe_reports_teacher_cost():
    world = sim.make_world("spread_v0", num_agents=8, seed=0)
    policy = TeacherPolicySpec(PlannerSpec.from_world_spec(WorldSpec("spread_v0", num_agents=8), depth=2)).build(
        world, seed=0
    )
    policy.act(world.reset(), world.alive, None)
    described = policy.describe()
    assert described["mode"] == "greedy"
    assert described["teacher_id"] == "planner/spread_v0"
    assert described["labels"] == 8
    assert described["us_per_label"] > 0


def test_serial_rollout_runs_and_counts():
    template = predator_prey()
    spec = TeacherPolicySpec(PlannerSpec.from_world_spec(template, depth=2))
    with make_backend("serial", split_population(template, total_agents=32, num_workers=2), spec) as backend:
        stats = backend.run(12)
    assert stats.world_steps == 2 * 12
    assert stats.episodes == 2
    assert stats.mean_episode_return is not None


def test_ray_backend_matches_serial_backend(ray_session):
    template = predator_prey(seed=5)
    shards = split_population(template, total_agents=48, num_workers=3)
    greedy = TeacherPolicySpec(PlannerSpec.from_world_spec(template, depth=2))
    with SerialBackend(shards, greedy) as serial, make_backend("ray", shards, greedy, num_cpus_per_worker=0.5) as remote:
        serial_trajectories = serial.sample(15)
        assert_same_trajectories(serial_trajectories, remote.sample(15))
        assert any(trajectory.terminated.any() for trajectory in serial_trajectories)

        sample = dataclasses.replace(greedy, mode="sample", seed=1)
        serial.set_policy(sample)
        remote.set_policy(sample)
        assert_same_trajectories(serial.sample(15), remote.sample(15))


def test_ray_backend_raises_teacher_errors(ray_session):
    template = WorldSpec("spread_v0", num_agents=8, options={"map_size": 30})
    spec = TeacherPolicySpec(PlannerSpec("spread_v0", {"map_size": 10}, depth=1))
    shards = split_population(template, total_agents=8, num_workers=1)
    with make_backend("ray", shards, spec, num_cpus_per_worker=0.5) as backend:
        with pytest.raises(LabelInputError, match=r"lies outside the 10x10 map of this planner"):
            backend.run(1)


# Bad specs.


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"mode": "argmax"}, ValueError, r"mode must be one of greedy, sample, got 'argmax'"),
        ({"seed": -1}, ValueError, r"seed must be a non-negative integer, got -1"),
        ({"teacher": "planner"}, TypeError, r"teacher must be a TeacherSpec, an object with build\(\) -> Teacher, got str"),
    ],
)
def test_spec_rejects_bad_arguments(arguments, error, match):
    values = {"teacher": FixedTeacherSpec(), **arguments}
    with pytest.raises(error, match=match):
        TeacherPolicySpec(**values)


def test_act_rejects_bad_alive_mask():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    policy = TeacherPolicySpec(FixedTeacherSpec()).build(world, seed=0)
    with pytest.raises(ValueError, match=r"alive must be a bool array of shape \(4,\), got int64 \(4,\)"):
        policy.act(world.reset(), np.ones(4, dtype=np.int64), None)


def test_build_rejects_non_teacher():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    with pytest.raises(TypeError, match=r"NotATeacherSpec.build\(\) must return a Teacher, got object"):
        TeacherPolicySpec(NotATeacherSpec()).build(world, seed=0)


def test_build_rejects_other_action_count():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    with pytest.raises(ValueError, match=r"teacher test/fixed labels 3 actions but world spread_v0 has 5"):
        TeacherPolicySpec(ThreeActionTeacherSpec()).build(world, seed=0)


def test_built_policy_is_a_batched_policy():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    policy = TeacherPolicySpec(FixedTeacherSpec()).build(world, seed=0)
    assert isinstance(policy, TeacherPolicy)
    assert isinstance(policy, sim.BatchedPolicy)
    assert isinstance(TeacherPolicySpec(FixedTeacherSpec()), sim.PolicySpec)
