"""The native worlds: shapes, determinism, game rules, death and respawn, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.worlds import ACTION_NAMES

WORLDS = sim.available_worlds()
STAY, UP, DOWN, LEFT, RIGHT = range(len(ACTION_NAMES))


def random_actions(world: sim.World, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, world.num_actions, size=world.num_agents)


def rollout(world: sim.World, seed: int, steps: int) -> list[np.ndarray]:
    """Run ``steps`` seeded random steps and return every array the world produced."""
    rng = np.random.default_rng(seed)
    arrays = [world.reset(seed=seed)]
    for _ in range(steps):
        step = world.step(random_actions(world, rng))
        arrays.extend(step)
        arrays.extend(world.state().values())
    return arrays


def test_available_worlds_lists_three_versioned_names():
    assert WORLDS == ["foraging_v0", "predator_prey_v0", "spread_v0"]


@pytest.mark.parametrize("name", WORLDS)
def test_reset_and_step_shapes(name):
    world = sim.make_world(name, num_agents=64, seed=0)
    obs = world.reset()
    assert obs.shape == (64, *world.observation_shape)
    assert obs.dtype == np.float32

    step = world.step(np.zeros(64, dtype=np.int64))
    assert step.obs.shape == (64, *world.observation_shape)
    assert step.obs.dtype == np.float32
    for array in (step.reward, step.terminated, step.truncated, step.alive):
        assert array.shape == (64,)
    assert step.reward.dtype == np.float32
    assert step.terminated.dtype == bool
    assert step.truncated.dtype == bool
    assert step.alive.dtype == bool


@pytest.mark.parametrize("name", WORLDS)
def test_same_seed_same_trajectory(name):
    first = rollout(sim.make_world(name, num_agents=200, max_steps=30), seed=7, steps=30)
    second = rollout(sim.make_world(name, num_agents=200, max_steps=30), seed=7, steps=30)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", WORLDS)
def test_different_seeds_differ(name):
    first = sim.make_world(name, num_agents=200).reset(seed=1)
    second = sim.make_world(name, num_agents=200).reset(seed=2)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", WORLDS)
def test_constructor_seed_drives_first_reset(name):
    a = sim.make_world(name, num_agents=100, seed=3)
    b = sim.make_world(name, num_agents=100, seed=3)
    np.testing.assert_array_equal(a.reset(), b.reset())
    np.testing.assert_array_equal(a.reset(), b.reset())


@pytest.mark.parametrize("name", WORLDS)
def test_time_limit_truncates_every_alive_agent(name):
    world = sim.make_world(name, num_agents=50, max_steps=5, seed=0)
    world.reset()
    for _ in range(4):
        step = world.step(np.zeros(50, dtype=np.int64))
        assert not step.truncated.any()
    alive_before = world.alive.copy()
    step = world.step(np.zeros(50, dtype=np.int64))
    np.testing.assert_array_equal(step.truncated, alive_before & ~step.terminated)
    assert not step.alive.any()
    assert world.episode_over


@pytest.mark.parametrize("name", WORLDS)
def test_step_after_episode_end_raises(name):
    world = sim.make_world(name, num_agents=10, max_steps=1, seed=0)
    world.reset()
    world.step(np.zeros(10, dtype=np.int64))
    with pytest.raises(sim.EpisodeEndedError, match=r"call reset\(\) before step\(\)"):
        world.step(np.zeros(10, dtype=np.int64))


@pytest.mark.parametrize("name", WORLDS)
def test_observation_is_local_and_state_is_global(name):
    world = sim.make_world(name, num_agents=500, seed=0, view_radius=2)
    obs = world.reset()
    assert obs.shape[1:3] == (5, 5)
    state = world.state()
    assert state["positions"].shape == (500, 2)
    assert state["alive"].shape == (500,)
    assert state["team_ids"].shape == (500,)
    # The state is a copy: stepping the world must not change what a teacher already read.
    before = state["positions"].copy()
    world.step(np.full(500, RIGHT))
    np.testing.assert_array_equal(state["positions"], before)


def test_walls_stop_agents_at_the_map_edge():
    world = sim.make_world("spread_v0", num_agents=4, map_size=4, seed=0, exclusive_cells=False)
    world.reset()
    for _ in range(4):
        world.step(np.full(4, UP))
    assert (world.state()["positions"][:, 0] == 0).all()
    for _ in range(4):
        obs = world.step(np.full(4, LEFT)).obs
    assert (world.state()["positions"] == 0).all()
    r = world.view_radius
    assert (obs[:, r - 1, :, 0] == 1.0).all(), "the row above the top edge reads as wall"
    assert (obs[:, :, r - 1, 0] == 1.0).all(), "the column left of the left edge reads as wall"


def test_agents_channel_excludes_the_observer():
    world = sim.make_world("spread_v0", num_agents=1, map_size=10, seed=0)
    obs = world.reset()
    assert obs[..., 1].sum() == 0.0
    world = sim.make_world("spread_v0", num_agents=2, map_size=3, seed=0, exclusive_cells=False)
    world.reset()
    world.pos[:] = [(1, 1), (1, 1)]
    world.interior[..., 1] = world.count_map(world.pos)
    obs = world._observe()
    r = world.view_radius
    assert obs[:, r, r, 1].tolist() == [1.0, 1.0], "each of two stacked agents sees the other"
    assert obs[..., 1].sum() == 2.0


def test_foraging_collects_food_and_pays_its_level():
    world = sim.make_world("foraging_v0", num_agents=1, map_size=8, num_food=1, max_food_level=1, seed=0)
    world.reset()
    world.pos[0] = (3, 3)
    world.food_pos[0] = (3, 5)
    world._food_grid[:] = 0
    world._food_grid[3, 5] = 1
    world.food_level[0] = 1

    assert world.step(np.array([STAY])).reward[0] == 0.0
    step = world.step(np.array([RIGHT]))
    assert step.reward[0] == 1.0
    assert world.metrics()["food_collected"] == 1.0
    assert tuple(world.food_pos[0]) != (3, 5), "collected food respawns elsewhere"


def test_foraging_heavy_food_needs_two():
    world = sim.make_world("foraging_v0", num_agents=2, map_size=8, num_food=1, max_food_level=2, seed=0)
    world.reset()
    world.pos[:] = [(0, 0), (7, 7)]
    world.food_pos[0] = (4, 4)
    world._food_grid[:] = 0
    world._food_grid[4, 4] = 2
    world.food_level[0] = 2

    world.pos[0] = (4, 3)
    assert world.step(np.array([STAY, STAY])).reward.sum() == 0.0, "one agent cannot lift level 2"
    world.pos[1] = (4, 6)
    step = world.step(np.array([STAY, LEFT]))
    np.testing.assert_allclose(step.reward, [1.0, 1.0])


def test_spread_rewards_and_crowding_penalty():
    world = sim.make_world(
        "spread_v0", num_agents=3, map_size=6, num_targets=2, collision_penalty=0.5, seed=0,
        exclusive_cells=False,
    )
    world.reset()
    world.target_pos[:] = [(1, 1), (4, 4)]
    world._target_grid[:] = 0.0
    world._target_grid[1, 1] = world._target_grid[4, 4] = 1.0
    world.pos[:] = [(1, 0), (4, 3), (4, 5)]

    step = world.step(np.array([RIGHT, RIGHT, LEFT]))
    np.testing.assert_allclose(step.reward, [1.0, -0.5, -0.5])
    assert world.metrics()["coverage"] == 1.0


def test_spread_never_puts_two_agents_on_one_cell():
    world = sim.make_world("spread_v0", num_agents=300, map_size=20, max_steps=60, seed=0)
    world.reset()
    rng = np.random.default_rng(0)
    while not world.episode_over:
        world.step(random_actions(world, rng))
        cells = world.flat_index(world.pos)
        assert np.unique(cells).size == 300


def test_spread_contested_cell_admits_one():
    world = sim.make_world("spread_v0", num_agents=2, map_size=6, num_targets=1, seed=3)
    world.reset()
    world.target_pos[:] = [(0, 0)]
    world._target_grid[:] = 0.0
    world.pos[:] = [(2, 1), (2, 3)]  # both step into (2, 2)

    step = world.step(np.array([RIGHT, LEFT]))
    positions = {tuple(p) for p in world.pos.tolist()}
    assert (2, 2) in positions
    assert len(positions) == 2
    assert sorted(step.reward.tolist()) == [-0.5, 0.0]


def test_spread_blocked_chained_and_swapped_moves():
    world = sim.make_world("spread_v0", num_agents=5, map_size=8, num_targets=1, seed=0)
    world.reset()
    world.target_pos[:] = [(7, 7)]
    world._target_grid[:] = 0.0
    world.pos[:] = [(0, 0), (0, 1), (3, 3), (3, 4), (5, 0)]
    # Agent 0 runs into agent 1, which stays; agents 2 and 3 swap; agent 4 moves freely.
    step = world.step(np.array([RIGHT, STAY, RIGHT, LEFT, DOWN]))
    assert world.pos.tolist() == [[0, 0], [0, 1], [3, 4], [3, 3], [6, 0]]
    assert step.reward.tolist() == [-0.5, 0.0, 0.0, 0.0, 0.0]

    # A chain: agent 1 leaves, so agent 0 can follow it into the freed cell.
    world.step(np.array([RIGHT, RIGHT, STAY, STAY, STAY]))
    assert world.pos[:2].tolist() == [[0, 1], [0, 2]]


def test_predator_prey_capture_kills_prey_and_pays_predators():
    world = sim.make_world(
        "predator_prey_v0", num_agents=3, num_predators=2, map_size=10, respawn_delay=None, seed=0
    )
    world.reset()
    world.pos[:] = [(5, 3), (5, 7), (5, 5)]  # two predators flank one prey

    step = world.step(np.array([RIGHT, LEFT, STAY]))
    assert step.terminated[2]
    assert not step.alive[2]
    np.testing.assert_allclose(step.reward, [0.5, 0.5, -1.0])
    assert (step.obs[2] == 0.0).all(), "a dead agent's observation row is zero"
    # Without respawning, the last prey's death ends the episode for the predators too.
    assert step.terminated.all()
    assert world.episode_over


def test_predator_prey_prey_respawn_after_delay():
    world = sim.make_world(
        "predator_prey_v0", num_agents=2, num_predators=1, map_size=12, respawn_delay=3, seed=0
    )
    world.reset()
    world.pos[:] = [(5, 4), (5, 5)]
    step = world.step(np.array([STAY, STAY]))
    assert step.terminated[1] and not step.alive[1]

    world.pos[0] = (0, 0)
    dead_steps = 0
    while not world.alive[1]:
        step = world.step(np.array([STAY, -1]))  # a dead row's action is ignored
        dead_steps += 1
        assert dead_steps <= 3
    assert dead_steps == 3
    assert not step.terminated[1]
    assert world.state()["respawn_timer"][1] == 0


def test_predator_prey_population_keeps_rows_while_agents_die():
    world = sim.make_world("predator_prey_v0", num_agents=400, seed=0, max_steps=50)
    world.reset()
    rng = np.random.default_rng(0)
    deaths = 0
    respawns = 0
    previous_alive = world.alive.copy()
    while not world.episode_over:
        step = world.step(random_actions(world, rng))
        assert step.obs.shape[0] == 400
        deaths += int(step.terminated.sum())
        respawns += int((step.alive & ~previous_alive).sum())
        previous_alive = step.alive
    assert deaths > 0
    assert respawns > 0
    assert world.metrics()["captures"] == deaths


def test_predator_prey_observation_marks_the_team():
    world = sim.make_world("predator_prey_v0", num_agents=8, num_predators=2, seed=0)
    obs = world.reset()
    assert (obs[:2, ..., 3] == 1.0).all()
    assert (obs[2:, ..., 3] == 0.0).all()
    assert world.agent_names[:3] == ("predator_0", "predator_1", "prey_0")


@pytest.mark.parametrize("name", WORLDS)
def test_ten_thousand_agents(name):
    world = sim.make_world(name, num_agents=10_000, seed=0)
    obs = world.reset()
    step = world.step(np.zeros(10_000, dtype=np.int64))
    assert obs.shape[0] == step.obs.shape[0] == 10_000


# Bad input.


def test_unknown_world_lists_available_ones():
    with pytest.raises(ValueError, match=r"unknown world 'forage'; available worlds: foraging_v0, predator_prey_v0, spread_v0"):
        sim.make_world("forage", num_agents=10)


@pytest.mark.parametrize("name", WORLDS)
@pytest.mark.parametrize("count", [0, -5])
def test_non_positive_num_agents_raises(name, count):
    with pytest.raises(ValueError, match=rf"num_agents must be >= 1, got {count}"):
        sim.make_world(name, num_agents=count)


@pytest.mark.parametrize("name", WORLDS)
def test_too_many_agents_names_limit(name):
    with pytest.raises(ValueError, match=r"num_agents=17 does not fit a 4x4 map, which holds at most 16"):
        sim.make_world(name, num_agents=17, map_size=4)


def test_num_agents_of_wrong_type_raises():
    with pytest.raises(TypeError, match=r"num_agents must be an integer, got 10.5"):
        sim.make_world("spread_v0", num_agents=10.5)


def test_unknown_option_lists_valid_options():
    with pytest.raises(TypeError, match=r"unknown option\(s\) view; valid options: .*view_radius"):
        sim.make_world("spread_v0", num_agents=10, view=3)


def test_negative_seed_raises():
    world = sim.make_world("spread_v0", num_agents=10)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer or None, got -1"):
        world.reset(seed=-1)


def test_predators_must_leave_room_for_prey():
    with pytest.raises(ValueError, match=r"num_predators=10 leaves no prey among num_agents=10"):
        sim.make_world("predator_prey_v0", num_agents=10, num_predators=10)


def test_too_much_food_raises():
    with pytest.raises(ValueError, match=r"num_food=16 needs fewer items than the 16 cells"):
        sim.make_world("foraging_v0", num_agents=4, map_size=4, num_food=16)


def test_too_many_targets_raises():
    with pytest.raises(ValueError, match=r"num_targets=17 does not fit the 16 cells"):
        sim.make_world("spread_v0", num_agents=4, map_size=4, num_targets=17)


def test_non_finite_option_raises():
    with pytest.raises(ValueError, match=r"collision_penalty must be a finite number, got nan"):
        sim.make_world("spread_v0", num_agents=4, collision_penalty=float("nan"))


@pytest.mark.parametrize("name", WORLDS)
def test_actions_of_wrong_shape_raise(name):
    world = sim.make_world(name, num_agents=10, seed=0)
    world.reset()
    with pytest.raises(sim.ActionError, match=r"actions must have shape \(10,\) \(one per agent row\), got \(9,\)"):
        world.step(np.zeros(9, dtype=np.int64))
    with pytest.raises(sim.ActionError, match=r"got \(10, 1\)"):
        world.step(np.zeros((10, 1), dtype=np.int64))


@pytest.mark.parametrize("name", WORLDS)
def test_float_actions_raise(name):
    world = sim.make_world(name, num_agents=10, seed=0)
    world.reset()
    with pytest.raises(sim.ActionError, match=r"actions must be an integer array, got dtype float64"):
        world.step(np.zeros(10))


@pytest.mark.parametrize("name", WORLDS)
@pytest.mark.parametrize("bad", [-1, 5])
def test_out_of_range_action_names_the_row(name, bad):
    world = sim.make_world(name, num_agents=10, seed=0)
    world.reset()
    actions = np.zeros(10, dtype=np.int64)
    actions[4] = bad
    with pytest.raises(sim.ActionError, match=rf"action {bad} of alive agent row 4 is out of range \[0, 5\)"):
        world.step(actions)


def test_dead_rows_accept_any_action():
    world = sim.make_world("predator_prey_v0", num_agents=2, num_predators=1, map_size=12, seed=0)
    world.reset()
    world.pos[:] = [(5, 4), (5, 5)]
    world.step(np.array([STAY, STAY]))
    assert not world.alive[1]
    world.step(np.array([STAY, 999]))
    world.step(np.array([STAY, -7]))


def test_alive_mask_is_read_only():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    world.reset()
    with pytest.raises(ValueError, match="read-only"):
        world.alive[0] = False


def test_foraging_food_channel_tracks_the_food_grid():
    world = sim.make_world("foraging_v0", num_agents=400, map_size=30, max_steps=80, seed=0)
    world.reset()
    rng = np.random.default_rng(0)
    for _ in range(60):
        world.step(random_actions(world, rng))
    np.testing.assert_array_equal(world.interior[..., 2], world._food_grid / world.max_food_level)
    assert world.metrics()["food_collected"] > 0


def test_step_before_reset_raises():
    world = sim.make_world("spread_v0", num_agents=4, seed=0)
    with pytest.raises(sim.EpisodeEndedError, match=r"call reset\(\) before the first step\(\)"):
        world.step(np.zeros(4, dtype=np.int64))
