"""Rollouts: specs and population splits, the random policy, workers, serial and Ray backends."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle

import numpy as np
import pytest

import sim
from sim.rollout import (
    NO_ACTION,
    SEED_LIMIT,
    RandomPolicySpec,
    RayBackend,
    RolloutWorker,
    SerialBackend,
    ShardSpec,
    WorldSpec,
    derive_seed,
    make_backend,
    split_population,
)
from sim.rollout.worker import POLICY_SEED_STREAM

TRAJECTORY_ARRAYS = ("obs", "actions", "rewards", "terminated", "truncated", "alive", "episode_start", "next_obs")


def foraging(num_agents: int = 50, seed: int = 0, max_steps: int = 10) -> WorldSpec:
    return WorldSpec("foraging_v0", num_agents=num_agents, seed=seed, options={"max_steps": max_steps})


def assert_same_trajectories(first: list[sim.Trajectory], second: list[sim.Trajectory]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.world_seed == b.world_seed
        for field in TRAJECTORY_ARRAYS:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@dataclasses.dataclass(frozen=True)
class ConstantPolicySpec:
    """Every alive agent takes ``weights["action"]``; new weights arrive through set_weights."""

    action: int = 0

    def build(self, world: sim.World, *, seed: int) -> ConstantPolicy:
        return ConstantPolicy(self.action)


class ConstantPolicy:
    def __init__(self, action: int) -> None:
        self.action = action

    def act(self, obs, alive, action_mask):
        return np.where(alive, self.action, NO_ACTION).astype(np.int64)

    def set_weights(self, weights: dict[str, int]) -> None:
        self.action = weights["action"]


@dataclasses.dataclass(frozen=True)
class EnvironmentPolicySpec:
    """Every alive agent takes the action named by environment variable ``variable`` of its process."""

    variable: str

    def build(self, world: sim.World, *, seed: int) -> ConstantPolicy:
        return ConstantPolicy(int(os.environ.get(self.variable, "0")))


@dataclasses.dataclass
class SpyPolicySpec:
    """Random actions that also append each call's (alive, actions) to ``calls``."""

    calls: list = dataclasses.field(default_factory=list)

    def build(self, world: sim.World, *, seed: int) -> SpyPolicy:
        return SpyPolicy(RandomPolicySpec().build(world, seed=seed), self.calls)


class SpyPolicy:
    def __init__(self, inner, calls: list) -> None:
        self.inner = inner
        self.calls = calls

    def act(self, obs, alive, action_mask):
        actions = self.inner.act(obs, alive, action_mask)
        self.calls.append((alive.copy(), actions.copy()))
        return actions


# Specs and the population split.


def test_world_spec_stores_options_sorted():
    spec = WorldSpec("foraging_v0", num_agents=10, options={"view_radius": 2, "max_steps": 7})
    assert spec.options == (("max_steps", 7), ("view_radius", 2))


def test_world_spec_is_hashable_and_picklable():
    spec = foraging()
    assert hash(spec) == hash(foraging())
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_world_spec_builds_seeded_world():
    world = foraging(num_agents=20, seed=4, max_steps=7).build()
    expected = sim.make_world("foraging_v0", num_agents=20, seed=4, max_steps=7)
    assert world.max_steps == 7
    np.testing.assert_array_equal(world.reset(), expected.reset())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "nope_v0"}, ValueError, r"unknown world 'nope_v0'; available worlds: foraging_v0"),
        ({"options": {"speed": 2}}, TypeError, r"foraging_v0: unknown option\(s\) speed; valid options:"),
        ({"max_steps": 5}, ValueError, r"max_steps=5 applies only to adapted PettingZoo envs"),
        ({"num_agents": 0}, ValueError, r"num_agents must be >= 1, got 0"),
        ({"num_agents": 2.5}, TypeError, r"num_agents must be an integer, got 2.5"),
        ({"seed": -1}, ValueError, r"seed must be >= 0, got -1"),
        ({"options": (("max_steps", 5), ("max_steps", 6))}, ValueError, r"options repeat a key"),
        ({"entry_point": "no colon"}, ValueError, r"entry_point must read 'module:function'"),
    ],
)
def test_world_spec_rejects_bad_fields(kwargs, error, match):
    fields = {"name": "foraging_v0", "num_agents": 10, **kwargs}
    with pytest.raises(error, match=match):
        WorldSpec(**fields)


def test_shard_spec_rejects_empty_and_foreign_worlds():
    with pytest.raises(ValueError, match="a shard needs at least one world"):
        ShardSpec(())
    with pytest.raises(TypeError, match="shard world 1 must be a WorldSpec, got dict"):
        ShardSpec((foraging(), {"name": "foraging_v0"}))


def test_derive_seed_is_stable_and_in_range():
    seeds = [derive_seed(3, index) for index in range(100)]
    assert seeds == [derive_seed(3, index) for index in range(100)]
    assert len(set(seeds)) == 100
    assert all(0 <= seed < SEED_LIMIT for seed in seeds)
    assert derive_seed(3, 1) != derive_seed(4, 0)


def test_split_population_balances_contiguous_blocks():
    shards = split_population(foraging(seed=9), total_agents=500, num_workers=2, agents_per_world=100)
    assert [len(shard.worlds) for shard in shards] == [3, 2]
    assert [shard.num_agents for shard in shards] == [300, 200]
    seeds = [world.seed for shard in shards for world in shard.worlds]
    assert seeds == [derive_seed(9, index) for index in range(5)]


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_split_population_seeds_ignore_worker_count(num_workers):
    shards = split_population(foraging(seed=2), total_agents=150, num_workers=num_workers)
    worlds = [world for shard in shards for world in shard.worlds]
    one_shard = split_population(foraging(seed=2), total_agents=150, num_workers=1)
    assert worlds == list(one_shard[0].worlds)


def test_split_population_defaults_to_template_size():
    shards = split_population(foraging(num_agents=25), total_agents=100, num_workers=2)
    assert [world.num_agents for shard in shards for world in shard.worlds] == [25, 25, 25, 25]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"total_agents": 100, "num_workers": 1, "agents_per_world": 30},
            ValueError,
            r"total_agents=100 is not a multiple of agents_per_world=30; .* change total_agents to 90 or 120",
        ),
        (
            {"total_agents": 150, "num_workers": 4, "agents_per_world": 50},
            ValueError,
            r"num_workers=4 exceeds the 3 world\(s\) .* use num_workers <= 3",
        ),
        ({"total_agents": 0, "num_workers": 1}, ValueError, r"total_agents must be >= 1, got 0"),
        ({"total_agents": 100, "num_workers": 0}, ValueError, r"num_workers must be >= 1, got 0"),
        ({"total_agents": 100, "num_workers": "2"}, TypeError, r"num_workers must be an integer, got '2'"),
    ],
)
def test_split_population_rejects_bad_counts(kwargs, error, match):
    with pytest.raises(error, match=match):
        split_population(foraging(), **kwargs)


# The random policy.


def test_random_policy_skips_dead_rows():
    world = foraging(num_agents=40).build()
    policy = RandomPolicySpec().build(world, seed=0)
    alive = np.arange(40) % 3 != 0
    actions = policy.act(np.zeros((40, 1), np.float32), alive, None)
    assert actions.dtype == np.int64
    assert (actions[~alive] == NO_ACTION).all()
    assert ((actions[alive] >= 0) & (actions[alive] < world.num_actions)).all()


def test_random_policy_draws_only_legal_actions():
    world = foraging(num_agents=600).build()
    policy = RandomPolicySpec().build(world, seed=0)
    mask = np.ones((600, 5), dtype=bool)
    mask[:300, [0, 2, 4]] = False  # rows 0..299 may take only actions 1 and 3
    actions = policy.act(np.zeros((600, 1), np.float32), np.ones(600, bool), mask)
    assert set(actions[:300].tolist()) == {1, 3}
    assert set(actions[300:].tolist()) == {0, 1, 2, 3, 4}


def test_random_policy_rejects_row_without_legal_action():
    world = foraging(num_agents=4).build()
    policy = RandomPolicySpec().build(world, seed=0)
    mask = np.ones((4, 5), dtype=bool)
    mask[2] = False
    mask[1, 0] = False
    with pytest.raises(ValueError, match="alive agent row 2 has no legal action under action_mask"):
        policy.act(np.zeros((4, 1), np.float32), np.ones(4, bool), mask)


def test_random_policy_depends_on_both_seeds():
    world = foraging(num_agents=100).build()
    alive = np.ones(100, bool)
    obs = np.zeros((100, 1), np.float32)

    def first_actions(spec_seed: int, world_seed: int) -> np.ndarray:
        return RandomPolicySpec(seed=spec_seed).build(world, seed=world_seed).act(obs, alive, None)

    np.testing.assert_array_equal(first_actions(0, 1), first_actions(0, 1))
    assert not np.array_equal(first_actions(0, 1), first_actions(0, 2))
    assert not np.array_equal(first_actions(0, 1), first_actions(1, 1))


# The rollout worker.


def test_worker_sample_shapes_and_dtypes():
    worker = RolloutWorker(ShardSpec((foraging(num_agents=30), foraging(num_agents=20, seed=1))), RandomPolicySpec())
    trajectories = worker.sample(6)
    assert [trajectory.world_seed for trajectory in trajectories] == [0, 1]
    trajectory = trajectories[1]
    assert trajectory.obs.shape == (6, 20, 7, 7, 3)
    assert trajectory.obs.dtype == np.float32
    assert trajectory.next_obs.shape == (20, 7, 7, 3)
    for field, dtype in [("actions", np.int64), ("rewards", np.float32), ("terminated", bool),
                         ("truncated", bool), ("alive", bool)]:
        assert getattr(trajectory, field).shape == (6, 20), field
        assert getattr(trajectory, field).dtype == dtype, field
    assert trajectory.episode_start.shape == (6,)
    assert trajectory.states is None


def test_worker_resets_world_at_episode_end():
    spec = foraging(num_agents=30, seed=5, max_steps=5)
    worker = RolloutWorker(ShardSpec((spec,)), RandomPolicySpec(seed=1))
    [trajectory] = worker.sample(12)
    assert trajectory.episode_start.tolist() == [t % 5 == 0 for t in range(12)]
    assert trajectory.truncated[4].all()
    assert trajectory.truncated[9].all()
    assert not trajectory.truncated[[0, 1, 2, 3, 5, 10]].any()
    # The reset continues the world's random stream instead of reseeding it.
    assert not np.array_equal(trajectory.obs[5], trajectory.obs[0])


def test_worker_matches_hand_written_loop():
    spec = foraging(num_agents=30, seed=5, max_steps=5)
    worker = RolloutWorker(ShardSpec((spec,)), RandomPolicySpec(seed=1))
    [trajectory] = worker.sample(12)

    world = spec.build()
    policy = RandomPolicySpec(seed=1).build(world, seed=derive_seed(spec.seed, POLICY_SEED_STREAM))
    obs = world.reset(seed=spec.seed)
    for t in range(12):
        np.testing.assert_array_equal(trajectory.obs[t], obs, err_msg=f"obs at step {t}")
        actions = policy.act(obs, world.alive, None)
        np.testing.assert_array_equal(trajectory.actions[t], actions, err_msg=f"actions at step {t}")
        step = world.step(actions)
        np.testing.assert_array_equal(trajectory.rewards[t], step.reward, err_msg=f"rewards at step {t}")
        obs = world.reset() if world.episode_over else step.obs
    np.testing.assert_array_equal(trajectory.next_obs, obs)


def test_worker_samples_continue_across_calls():
    shard = ShardSpec((foraging(num_agents=20, max_steps=4),))
    [whole] = RolloutWorker(shard, RandomPolicySpec()).sample(10)
    worker = RolloutWorker(shard, RandomPolicySpec())
    [first] = worker.sample(6)
    [second] = worker.sample(4)
    np.testing.assert_array_equal(first.next_obs, second.obs[0])
    for field in ("obs", "actions", "rewards", "truncated", "alive", "episode_start"):
        joined = np.concatenate([getattr(first, field), getattr(second, field)])
        np.testing.assert_array_equal(joined, getattr(whole, field), err_msg=field)


def test_worker_skips_dead_prey():
    spec = WorldSpec(
        "predator_prey_v0",
        num_agents=40,
        seed=3,
        options={"map_size": 8, "num_predators": 20, "respawn_delay": 4, "max_steps": 30},
    )
    policy = SpyPolicySpec()
    [trajectory] = RolloutWorker(ShardSpec((spec,)), policy).sample(15)

    dead = ~trajectory.alive
    assert dead.any(), "no prey was captured; the test world is too sparse"
    assert (trajectory.actions[dead] == NO_ACTION).all()
    assert (trajectory.obs[dead] == 0).all()
    assert (trajectory.rewards[dead] == 0).all()
    # A capture at step t leaves the prey dead at step t + 1.
    captured = trajectory.terminated[:-1]
    assert (~trajectory.alive[1:][captured]).all()
    assert len(policy.calls) == 15
    for alive, actions in policy.calls:
        assert (actions[~alive] == NO_ACTION).all()


def test_worker_run_matches_sampled_returns():
    shard = ShardSpec((foraging(num_agents=30, max_steps=5), foraging(num_agents=30, seed=1, max_steps=5)))
    trajectories = RolloutWorker(shard, RandomPolicySpec()).sample(10)
    stats = RolloutWorker(shard, RandomPolicySpec()).run(10)

    returns = [trajectory.rewards[start:start + 5].sum(axis=0).mean()
               for trajectory in trajectories for start in (0, 5)]
    assert stats.agent_steps == 2 * 10 * 30
    assert stats.world_steps == 2 * 10
    assert stats.episodes == 4
    assert stats.mean_episode_return == pytest.approx(np.mean(returns))
    assert stats.env_seconds > 0
    assert stats.policy_seconds > 0
    assert stats.wall_seconds >= stats.env_seconds + stats.policy_seconds


def test_worker_run_without_episode_end():
    stats = RolloutWorker(ShardSpec((foraging(max_steps=50),)), RandomPolicySpec()).run(3)
    assert stats.episodes == 0
    assert stats.mean_episode_return is None
    assert stats.to_dict()["mean_episode_return"] is None


def test_worker_sample_records_states():
    spec = WorldSpec("predator_prey_v0", num_agents=40, options={"map_size": 8, "num_predators": 20})
    [trajectory] = RolloutWorker(ShardSpec((spec,)), RandomPolicySpec()).sample(5, with_state=True)
    assert len(trajectory.states) == 5
    for t, state in enumerate(trajectory.states):
        np.testing.assert_array_equal(state["alive"], trajectory.alive[t], err_msg=f"step {t}")


def test_worker_set_weights_reaches_policies():
    worker = RolloutWorker(ShardSpec((foraging(num_agents=10),)), ConstantPolicySpec())
    worker.set_weights({"action": 3})
    [trajectory] = worker.sample(2)
    assert (trajectory.actions == 3).all()


def test_worker_set_policy_replaces_policies():
    worker = RolloutWorker(ShardSpec((foraging(num_agents=10),)), RandomPolicySpec())
    worker.set_policy(ConstantPolicySpec(action=4))
    [trajectory] = worker.sample(2)
    assert (trajectory.actions == 4).all()


def test_worker_rejects_bad_arguments():
    shard = ShardSpec((foraging(num_agents=10),))
    with pytest.raises(TypeError, match="shard must be a ShardSpec, got tuple"):
        RolloutWorker((foraging(),), RandomPolicySpec())
    with pytest.raises(TypeError, match="policy must be a PolicySpec, .* got str"):
        RolloutWorker(shard, "random")
    worker = RolloutWorker(shard, RandomPolicySpec())
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        worker.sample(0)
    with pytest.raises(TypeError, match="num_steps must be an integer, got 2.0"):
        worker.run(2.0)
    with pytest.raises(TypeError, match="RandomPolicy has no set_weights"):
        worker.set_weights({"action": 1})


def test_worker_propagates_illegal_actions():
    worker = RolloutWorker(ShardSpec((foraging(num_agents=10),)), ConstantPolicySpec(action=9))
    with pytest.raises(sim.ActionError, match="action 9 of alive agent row 0 is out of range"):
        worker.run(1)


# Backends.


def test_make_backend_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown rollout backend 'threads'; valid kinds: ray, serial"):
        make_backend("threads", split_population(foraging(), total_agents=50, num_workers=1), RandomPolicySpec())


def test_make_backend_rejects_option_of_other_backend():
    shards = split_population(foraging(), total_agents=50, num_workers=1)
    with pytest.raises(TypeError, match="num_cpus_per_worker"):
        make_backend("serial", shards, RandomPolicySpec(), num_cpus_per_worker=1)


def test_serial_backend_ignores_worker_count():
    template = foraging(num_agents=50, seed=11, max_steps=10)
    with make_backend("serial", split_population(template, total_agents=150, num_workers=1),
                      RandomPolicySpec(seed=2)) as one_worker:
        expected = one_worker.sample(24)
    with make_backend("serial", split_population(template, total_agents=150, num_workers=3),
                      RandomPolicySpec(seed=2)) as three_workers:
        assert three_workers.num_workers == 3
        assert [info.num_agents for info in three_workers.worlds] == [50, 50, 50]
        actual = three_workers.sample(24)
    assert [trajectory.episode_start.sum() for trajectory in expected] == [3, 3, 3]
    assert_same_trajectories(expected, actual)


def test_serial_backend_rejects_calls_after_close():
    backend = SerialBackend(split_population(foraging(), total_agents=50, num_workers=1), RandomPolicySpec())
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="this SerialBackend is closed; build a new one with make_backend"):
        backend.run(1)


def test_ray_backend_matches_serial_backend(ray_session):
    shards = split_population(foraging(num_agents=50, seed=11, max_steps=10), total_agents=150, num_workers=3)
    policy = RandomPolicySpec(seed=2)
    with SerialBackend(shards, policy) as serial, \
            make_backend("ray", shards, policy, num_cpus_per_worker=0.5) as remote:
        assert remote.num_workers == 3
        assert remote.worlds == serial.worlds
        remote_trajectories = remote.sample(24)
        assert_same_trajectories(serial.sample(24), remote_trajectories)
        assert not remote_trajectories[0].obs.flags.writeable

        serial_stats = serial.run(16)
        remote_stats = remote.run(16)
    assert remote_stats.agent_steps == serial_stats.agent_steps == 150 * 16
    assert remote_stats.episodes == serial_stats.episodes == 3 * 2
    assert remote_stats.mean_episode_return == pytest.approx(serial_stats.mean_episode_return)


def test_ray_backend_broadcasts_weights(ray_session):
    shards = split_population(foraging(num_agents=10), total_agents=20, num_workers=2)
    with RayBackend(shards, ConstantPolicySpec(), num_cpus_per_worker=0.5) as backend:
        backend.set_weights({"action": 2})
        assert all((trajectory.actions == 2).all() for trajectory in backend.sample(2))
        backend.set_policy(ConstantPolicySpec(action=1))
        assert all((trajectory.actions == 1).all() for trajectory in backend.sample(2))
    with pytest.raises(RuntimeError, match="this RayBackend is closed; build a new one"):
        backend.sample(1)


def test_ray_backend_sets_actor_env_vars(ray_session):
    shards = split_population(foraging(num_agents=10), total_agents=10, num_workers=1)
    policy = EnvironmentPolicySpec("SHEPHERD_TEST_ACTION")
    with RayBackend(shards, policy, num_cpus_per_worker=0.5, env_vars={"SHEPHERD_TEST_ACTION": "3"}) as backend:
        [trajectory] = backend.sample(2)
    assert (trajectory.actions == 3).all()


def test_ray_backend_raises_worker_errors_as_their_type(ray_session):
    shards = split_population(foraging(num_agents=10), total_agents=10, num_workers=1)
    with RayBackend(shards, ConstantPolicySpec(action=9), num_cpus_per_worker=0.5) as backend:
        with pytest.raises(sim.ActionError, match="action 9 of alive agent row 0 is out of range"):
            backend.run(1)


def test_ray_backend_times_out_without_cpus(ray_session):
    shards = split_population(foraging(num_agents=10), total_agents=10, num_workers=1)
    with pytest.raises(TimeoutError, match=r"reserving 64.0 CPU\(s\) each did not start within 1.0 s"):
        RayBackend(shards, RandomPolicySpec(), num_cpus_per_worker=64, start_timeout_s=1.0)


@pytest.mark.parametrize(
    ("num_cpus", "error", "match"),
    [(0, ValueError, "num_cpus_per_worker must be > 0, got 0"),
     ("1", TypeError, "num_cpus_per_worker must be a number, got '1'")],
)
def test_ray_backend_rejects_bad_cpu_count(ray_session, num_cpus, error, match):
    shards = split_population(foraging(num_agents=10), total_agents=10, num_workers=1)
    with pytest.raises(error, match=match):
        RayBackend(shards, RandomPolicySpec(), num_cpus_per_worker=num_cpus)


def test_ray_backend_requires_initialised_ray(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    shards = split_population(foraging(num_agents=10), total_agents=10, num_workers=1)
    with pytest.raises(RuntimeError, match=r"RayBackend needs a running Ray instance; call ray.init\(\) first"):
        RayBackend(shards, RandomPolicySpec())


# Adapted PettingZoo envs.


@pytest.mark.skipif(importlib.util.find_spec("mpe2") is None, reason="needs the mpe2 package")
def test_entry_point_world_ignores_sharding():
    template = WorldSpec("simple_spread", num_agents=3, seed=4, entry_point="mpe2.simple_spread_v3:parallel_env",
                         options={"max_cycles": 5}, max_steps=5)
    with make_backend("serial", split_population(template, total_agents=6, num_workers=1),
                      RandomPolicySpec()) as one_worker:
        expected = one_worker.sample(8)
    with make_backend("serial", split_population(template, total_agents=6, num_workers=2),
                      RandomPolicySpec()) as two_workers:
        actual = two_workers.sample(8)
    assert expected[0].obs.shape == (8, 3, 18)
    assert expected[0].episode_start.tolist() == [True, False, False, False, False, True, False, False]
    assert_same_trajectories(expected, actual)


def test_entry_point_world_rejects_wrong_agent_count():
    pytest.importorskip("mpe2", reason="needs the mpe2 package")
    spec = WorldSpec("simple_spread", num_agents=4, entry_point="mpe2.simple_spread_v3:parallel_env")
    with pytest.raises(ValueError, match="built an env with 3 agents, but the spec expects num_agents=4"):
        spec.build()
