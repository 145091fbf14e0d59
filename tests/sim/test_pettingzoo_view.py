"""Tests of the PettingZoo view of the native worlds, run through PettingZoo's own checks."""

from __future__ import annotations

import warnings

import numpy as np
import pettingzoo
import pytest

import sim
from sim.pettingzoo_view import DEFAULT_NUM_AGENTS
from sim.registry import world_options

# pettingzoo 1.27's api_test imports connect_four_v3 through the deprecated module path,
# which raises a DeprecationWarning inside PettingZoo that this suite cannot fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pettingzoo.test import parallel_api_test
    from pettingzoo.test.seed_test import parallel_seed_test

WORLDS = sim.available_worlds()
SMALL = {"num_agents": 8, "max_steps": 20}


def small_env(name: str, **options):
    """Return a view of a small world, so that a whole episode takes milliseconds."""
    return sim.parallel_env(name, **{**SMALL, **options})


def random_actions(env, rng: np.random.Generator) -> dict[str, int]:
    return {agent: int(rng.integers(env.world.num_actions)) for agent in env.agents}


def run_episode(env, *, seed: int, action_seed: int) -> list[tuple]:
    """Play one episode with seeded random actions and return every step's five dicts."""
    rng = np.random.default_rng(action_seed)
    env.reset(seed=seed)
    steps = []
    while env.agents:
        steps.append(env.step(random_actions(env, rng)))
    return steps


def prey_hunt_env():
    """A crowded predator_prey view in which prey die within a few steps."""
    return sim.parallel_env(
        "predator_prey_v0", num_agents=8, num_predators=4, map_size=5, max_steps=50
    )


# PettingZoo's conformance checks.


@pytest.mark.parametrize("name", WORLDS)
def test_parallel_api_test_passes(name):
    env = small_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(env, num_cycles=100)


@pytest.mark.parametrize("name", WORLDS)
def test_parallel_seed_test_passes(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_seed_test(lambda: small_env(name), num_cycles=20)


# Determinism and agreement with the batched world.


@pytest.mark.parametrize("name", WORLDS)
def test_same_seed_same_trajectory(name):
    first = run_episode(small_env(name), seed=7, action_seed=1)
    second = run_episode(small_env(name), seed=7, action_seed=1)

    assert len(first) == len(second)
    for (obs_a, reward_a, term_a, trunc_a, _), (obs_b, reward_b, term_b, trunc_b, _) in zip(first, second):
        assert obs_a.keys() == obs_b.keys()
        for agent in obs_a:
            np.testing.assert_array_equal(obs_a[agent], obs_b[agent])
        assert reward_a == reward_b
        assert term_a == term_b
        assert trunc_a == trunc_b


@pytest.mark.parametrize("name", WORLDS)
def test_different_seeds_differ(name):
    env = small_env(name)
    obs_a, _ = env.reset(seed=0)
    obs_b, _ = env.reset(seed=1)
    assert any(not np.array_equal(obs_a[agent], obs_b[agent]) for agent in obs_a)


@pytest.mark.parametrize("name", WORLDS)
def test_view_matches_batched_world(name):
    options = {"respawn_delay": None} if "respawn_delay" in world_options(name) else {}
    world = sim.make_world(name, **SMALL, **options)
    env = small_env(name)
    rng = np.random.default_rng(3)

    world_obs = world.reset(seed=5)
    obs, _ = env.reset(seed=5)
    row_of = {agent: row for row, agent in enumerate(env.possible_agents)}
    while env.agents:
        for agent in obs:
            np.testing.assert_array_equal(obs[agent], world_obs[row_of[agent]])
        actions = random_actions(env, rng)
        world_actions = np.zeros(world.num_agents, dtype=np.int64)
        for agent, action in actions.items():
            world_actions[row_of[agent]] = action

        world_step = world.step(world_actions)
        world_obs = world_step.obs
        obs, reward, terminated, truncated, _ = env.step(actions)
        for agent in actions:
            assert reward[agent] == world_step.reward[row_of[agent]]
            assert terminated[agent] == world_step.terminated[row_of[agent]]
            assert truncated[agent] == world_step.truncated[row_of[agent]]
        assert env.agents == [agent for agent, row in row_of.items() if world_step.alive[row]]


# Agents, spaces and state.


@pytest.mark.parametrize("name", WORLDS)
def test_possible_agents_are_world_names(name):
    env = small_env(name)
    assert env.possible_agents == list(env.world.agent_names)
    assert env.agents == []
    env.reset(seed=0)
    assert env.agents == env.possible_agents
    assert env.agents is not env.possible_agents


@pytest.mark.parametrize("name", WORLDS)
def test_num_agents_defaults_and_counts_alive(name):
    env = sim.parallel_env(name)
    assert env.max_num_agents == DEFAULT_NUM_AGENTS
    assert env.num_agents == 0
    env.reset(seed=0)
    assert env.num_agents == DEFAULT_NUM_AGENTS


@pytest.mark.parametrize("name", WORLDS)
def test_spaces_are_same_object(name):
    env = small_env(name)
    agent = env.possible_agents[0]
    assert env.observation_space(agent) is env.observation_space(agent)
    assert env.action_space(agent) is env.action_space(agent)
    assert env.observation_space(agent).shape == env.world.observation_shape
    assert env.observation_space(agent).dtype == np.float32
    assert env.action_space(agent).n == env.world.num_actions


def test_space_of_unknown_agent_rejected():
    env = small_env("spread_v0")
    expected = r"unknown agent 'ghost_0'; possible_agents are 'agent_0' \.\.\. 'agent_7'"
    with pytest.raises(ValueError, match=expected):
        env.observation_space("ghost_0")
    with pytest.raises(ValueError, match="unknown agent 'ghost_0'"):
        env.action_space("ghost_0")


@pytest.mark.parametrize("name", WORLDS)
def test_observations_lie_in_space(name):
    env = small_env(name)
    for obs, *_ in run_episode(env, seed=2, action_seed=2):
        for agent, agent_obs in obs.items():
            assert env.observation_space(agent).contains(agent_obs), agent


@pytest.mark.parametrize("name", WORLDS)
def test_observations_are_row_views(name):
    env = small_env(name)
    obs, _ = env.reset(seed=0)
    first, second = env.possible_agents[:2]
    assert obs[first].base is not None
    assert obs[first].base is obs[second].base


@pytest.mark.parametrize("name", WORLDS)
def test_state_concatenates_world_state(name):
    env = small_env(name)
    env.reset(seed=0)
    env.step(random_actions(env, np.random.default_rng(0)))

    state = env.state()
    expected = np.concatenate([array.ravel() for array in env.world.state().values()]).astype(np.float32)
    assert state.dtype == np.float32
    assert state.shape == env.state_space.shape
    np.testing.assert_array_equal(state, expected)
    assert env.state_space.contains(state)


@pytest.mark.parametrize("name", WORLDS)
def test_step_dicts_hold_agents_that_acted(name):
    env = small_env(name)
    env.reset(seed=0)
    acted = list(env.agents)
    obs, reward, terminated, truncated, infos = env.step(random_actions(env, np.random.default_rng(0)))
    for output in (obs, reward, terminated, truncated, infos):
        assert list(output) == acted
    assert all(type(value) is float for value in reward.values())
    assert all(type(value) is bool for value in terminated.values())


# Episode end and deaths.


@pytest.mark.parametrize("name", WORLDS)
def test_agents_empty_at_time_limit(name):
    env = small_env(name, max_steps=3)
    steps = run_episode(env, seed=0, action_seed=0)
    assert len(steps) <= 3
    assert env.agents == []
    _, _, terminated, truncated, _ = steps[-1]
    assert all(terminated[agent] or truncated[agent] for agent in terminated)


def test_prey_deaths_shrink_agents():
    env = prey_hunt_env()
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    finished: set[str] = set()
    sizes = [len(env.agents)]

    while env.agents:
        acted = list(env.agents)
        _, _, terminated, truncated, _ = env.step(random_actions(env, rng))
        finished |= {agent for agent in acted if terminated[agent] or truncated[agent]}
        assert env.agents == [agent for agent in acted if agent not in finished]
        sizes.append(len(env.agents))

    assert any(0 < size < 8 for size in sizes), sizes
    assert env.world.episode_step < 50
    assert env.agents == []
    assert finished == set(env.possible_agents)


def test_predator_prey_view_disables_respawn():
    assert prey_hunt_env().world.respawn_delay is None
    env = sim.parallel_env("predator_prey_v0", num_agents=8, respawn_delay=None)
    assert env.world.respawn_delay is None


def test_respawn_delay_rejected():
    with pytest.raises(ValueError, match=r"cannot respawn agents.*respawn_delay=10.*sim\.make_world\(\)"):
        sim.parallel_env("predator_prey_v0", num_agents=8, respawn_delay=10)


def test_respawning_world_rejected_by_view():
    world = sim.make_world("predator_prey_v0", num_agents=8)
    with pytest.raises(ValueError, match="cannot respawn agents"):
        sim.WorldParallelEnv(world)


# Actions.


def test_action_for_dead_agent_rejected():
    env = prey_hunt_env()
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    dead = []
    while not dead:
        acted = list(env.agents)
        env.step(random_actions(env, rng))
        dead = [agent for agent in acted if agent not in env.agents]

    actions = {**random_actions(env, rng), dead[0]: 0}
    with pytest.raises(sim.ActionError, match=f"agent '{dead[0]}' is not in agents"):
        env.step(actions)


def test_unknown_agent_in_actions_rejected():
    env = small_env("foraging_v0")
    env.reset(seed=0)
    actions = {**random_actions(env, np.random.default_rng(0)), "ghost_0": 0}
    with pytest.raises(sim.ActionError, match="actions contain unknown agent 'ghost_0'"):
        env.step(actions)


def test_missing_action_rejected():
    env = small_env("foraging_v0")
    env.reset(seed=0)
    actions = random_actions(env, np.random.default_rng(0))
    del actions["forager_3"]
    with pytest.raises(sim.ActionError, match="actions are missing for 1 agent.*'forager_3'"):
        env.step(actions)


@pytest.mark.parametrize("bad", [5, -1])
def test_action_out_of_range_rejected(bad):
    env = small_env("spread_v0")
    env.reset(seed=0)
    actions = {**random_actions(env, np.random.default_rng(0)), "agent_2": bad}
    with pytest.raises(sim.ActionError, match=rf"action {bad} of agent 'agent_2' is out of range \[0, 5\)"):
        env.step(actions)


@pytest.mark.parametrize("bad", [1.5, None, np.array([1, 2])])
def test_non_integer_action_rejected(bad):
    env = small_env("spread_v0")
    env.reset(seed=0)
    actions = {**random_actions(env, np.random.default_rng(0)), "agent_2": bad}
    with pytest.raises(sim.ActionError, match=r"each action must be one integer in \[0, 5\)"):
        env.step(actions)


def test_step_after_episode_end_rejected():
    env = small_env("spread_v0", max_steps=1)
    run_episode(env, seed=0, action_seed=0)
    with pytest.raises(sim.EpisodeEndedError, match="call reset"):
        env.step({})


# Construction errors.


def test_unknown_world_rejected():
    expected = "unknown world 'chess_v6'; available worlds: foraging_v0, predator_prey_v0, spread_v0"
    with pytest.raises(ValueError, match=expected):
        sim.parallel_env("chess_v6")


def test_unknown_option_rejected():
    with pytest.raises(TypeError, match="foraging_v0: unknown option.*respawn_delay; valid options:"):
        sim.parallel_env("foraging_v0", respawn_delay=None)


def test_max_cycles_rejected_naming_max_steps():
    sim.register_pettingzoo_envs()
    with pytest.raises(TypeError, match="unknown option.*max_cycles; valid options:.*max_steps"):
        pettingzoo.make("parallel", "shepherd/spread-v0", num_agents=4, max_cycles=10)


def test_bad_option_value_rejected():
    with pytest.raises(ValueError, match="spread_v0: max_steps must be >= 1, got 0"):
        sim.parallel_env("spread_v0", max_steps=0)
    with pytest.raises(ValueError, match="num_agents=500 does not fit"):
        sim.parallel_env("spread_v0", num_agents=500, map_size=8)


def test_unknown_render_mode_rejected():
    with pytest.raises(ValueError, match=r"render_mode must be one of None, 'ansi', got 'human'"):
        sim.parallel_env("spread_v0", render_mode="human")


# Rendering.


@pytest.mark.parametrize("name", WORLDS)
def test_render_ansi_draws_grid(name):
    env = sim.parallel_env(name, num_agents=8, map_size=10, render_mode="ansi")
    env.reset(seed=0)
    lines = env.render().splitlines()

    assert lines[0] == f"{name} step 0/{env.world.max_steps}, 8 agents alive"
    grid = lines[1:-1]
    assert len(grid) == 10
    assert all(len(row) == 10 for row in grid)
    assert sum(cell != "." for row in grid for cell in row) >= 1
    assert "=" in lines[-1]


def test_render_without_mode_warns():
    env = small_env("spread_v0")
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode='ansi'"):
        assert env.render() is None


# PettingZoo registry.


def test_register_is_idempotent():
    ids = sim.register_pettingzoo_envs()
    assert ids == ["shepherd/foraging-v0", "shepherd/predator_prey-v0", "shepherd/spread-v0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sim.register_pettingzoo_envs() == ids


@pytest.mark.parametrize("name", WORLDS)
def test_registry_make_builds_view(name):
    env_id = dict(zip(WORLDS, sim.register_pettingzoo_envs()))[name]
    env = pettingzoo.make("parallel", env_id, num_agents=4)
    assert isinstance(env, sim.WorldParallelEnv)
    assert env.world.name == name
    assert env.max_num_agents == 4


def test_registry_resolves_underscore_and_unversioned_ids():
    sim.register_pettingzoo_envs()
    for env_id in ("shepherd/foraging_v0", "shepherd/foraging"):
        env = pettingzoo.make("parallel", env_id, num_agents=4)
        assert env.world.name == "foraging_v0"
