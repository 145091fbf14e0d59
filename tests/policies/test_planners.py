"""Privileged planners: labels, world rules, bad input, specs, the local heuristic, and returns."""

from __future__ import annotations

import pickle
import types

import numpy as np
import pytest

import sim
from policies.planners import (
    ForagingPlanner,
    LocalHeuristicPolicySpec,
    PlannerSpec,
    PredatorPreyPlanner,
    SpreadPlanner,
)
from policies.teacher import LabelInputError, LabelRequest
from policies.teacher_policy import TeacherPolicySpec
from sim.rollout import NO_ACTION, RandomPolicySpec, WorldSpec
from sim.worlds import ACTION_NAMES

WORLDS = ("foraging_v0", "predator_prey_v0", "spread_v0")
STAY, UP, DOWN, LEFT, RIGHT = range(len(ACTION_NAMES))
TEST_DEPTH = 2
"""A cheap depth for tests; the default depths cost a millisecond or more per label."""


def world_request(name: str, *, num_agents: int = 16, seed: int = 0, steps: int = 3, **options):
    """Return a world after a few random steps and a request for all of its alive agents."""
    world = sim.make_world(name, num_agents=num_agents, seed=seed, **options)
    obs = world.reset()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs = world.step(rng.integers(0, world.num_actions, size=num_agents)).obs
    rows = np.flatnonzero(world.alive)
    return world, LabelRequest(obs[rows], rows, world.state())


def planner_for(world: sim.World, **knobs) -> PlannerSpec:
    return PlannerSpec(world.name, {"map_size": world.map_size, "view_radius": world.view_radius}, **knobs)


def crafted_request(teacher, positions, rows, **state_arrays) -> LabelRequest:
    """A request over a hand-made state: every agent alive unless ``alive`` is given."""
    positions = np.asarray(positions, dtype=np.int64)
    state = {"positions": positions, "alive": np.ones(len(positions), dtype=bool), **state_arrays}
    rows = np.asarray(rows, dtype=np.int64)
    obs = np.zeros((rows.size, *teacher.observation_shape), dtype=np.float32)
    return LabelRequest(obs, rows, state)


def foraging_state(food_positions, food_levels) -> dict[str, np.ndarray]:
    return {
        "food_positions": np.asarray(food_positions, dtype=np.int64),
        "food_levels": np.asarray(food_levels, dtype=np.int64),
    }


# Labels of every planner.


@pytest.mark.parametrize("name", WORLDS)
def test_labels_are_valid_distributions(name):
    world, request = world_request(name)
    labels = planner_for(world, depth=TEST_DEPTH).build().label(request)
    assert labels.probs.shape == (request.size, world.num_actions)
    np.testing.assert_allclose(labels.probs.sum(axis=1), 1.0, atol=1e-5)
    assert labels.aux["goal"].shape == (request.size, 2)
    assert labels.aux["value"].shape == (request.size,)
    assert np.abs(labels.aux["goal"]).max() <= 1.0
    assert labels.teacher_id == f"planner/{name}"


@pytest.mark.parametrize("name", WORLDS)
def test_labels_are_deterministic(name):
    world, request = world_request(name)
    first = planner_for(world, depth=TEST_DEPTH).build().label(request)
    second = planner_for(world, depth=TEST_DEPTH).build().label(request)
    np.testing.assert_array_equal(first.probs, second.probs)
    np.testing.assert_array_equal(first.aux["value"], second.aux["value"])


@pytest.mark.parametrize("name", WORLDS)
def test_version_names_the_knobs(name):
    world, _ = world_request(name, steps=0)
    shallow = planner_for(world, depth=1, temperature=0.2).build()
    deep = planner_for(world, depth=2, temperature=0.2).build()
    assert "depth=1" in shallow.version
    assert "temperature=0.2" in shallow.version
    assert f"map_size={world.map_size}" in shallow.version
    assert shallow.version != deep.version


@pytest.mark.parametrize(
    ("name", "planner_class"),
    [("foraging_v0", ForagingPlanner), ("predator_prey_v0", PredatorPreyPlanner), ("spread_v0", SpreadPlanner)],
)
def test_unset_knobs_take_world_defaults(name, planner_class):
    teacher = PlannerSpec(name, {"map_size": 12}).build()
    assert isinstance(teacher, planner_class)
    assert teacher.depth == planner_class.default_depth
    assert teacher.temperature == planner_class.default_temperature
    assert teacher.sequences.shape == (5**teacher.depth, teacher.depth)


@pytest.mark.parametrize("name", WORLDS)
def test_cost_is_measured_per_label(name):
    world, request = world_request(name)
    teacher = planner_for(world, depth=TEST_DEPTH).build()
    teacher.label(request)
    cost = teacher.cost()
    assert cost.labels == request.size
    assert cost.us_per_label > 0
    assert cost.params is None


@pytest.mark.parametrize("name", WORLDS)
def test_action_mask_is_respected(name):
    world, request = world_request(name)
    mask = np.ones((request.size, world.num_actions), dtype=bool)
    mask[:, RIGHT] = False
    mask[0] = [True, False, False, False, False]
    masked = LabelRequest(request.obs, request.rows, request.state, mask)
    labels = planner_for(world, depth=TEST_DEPTH).build().label(masked)
    assert (labels.probs[:, RIGHT] == 0).all()
    assert labels.probs[0, STAY] == pytest.approx(1.0)


@pytest.mark.parametrize("name", WORLDS)
def test_soft_labels_are_informative_at_default_temperature(name):
    world, request = world_request(name, num_agents=32, steps=5)
    labels = planner_for(world, depth=3).build().label(request)
    max_prob = labels.probs.max(axis=1)
    entropy = -(labels.probs * np.log(np.maximum(labels.probs, 1e-12))).sum(axis=1)
    assert 0.3 < max_prob.mean() < 0.9
    assert entropy.mean() < np.log(world.num_actions) - 0.1
    assert (max_prob < 0.99).mean() > 0.5


@pytest.mark.parametrize("name", WORLDS)
def test_empty_batch_is_fine(name):
    world, request = world_request(name)
    empty = LabelRequest(request.obs[:0], request.rows[:0], request.state)
    labels = planner_for(world, depth=TEST_DEPTH).build().label(empty)
    assert labels.probs.shape == (0, world.num_actions)
    assert labels.aux["goal"].shape == (0, 2)


def test_dead_rows_get_uniform_labels():
    world, request = world_request("predator_prey_v0")
    state = dict(request.state)
    state["alive"] = state["alive"].copy()
    state["alive"][request.rows[-1]] = False
    labels = planner_for(world, depth=TEST_DEPTH).build().label(LabelRequest(request.obs, request.rows, state))
    np.testing.assert_allclose(labels.probs[-1], 0.2)
    assert labels.aux["value"][-1] == 0.0
    assert (labels.aux["goal"][-1] == 0.0).all()


# The world model follows each world's rules.


def test_forager_heads_for_food():
    teacher = PlannerSpec("foraging_v0", {"map_size": 20}, depth=3).build()
    request = crafted_request(teacher, [[10, 10]], [0], **foraging_state([[10, 14]], [1]))
    labels = teacher.label(request)
    assert labels.probs[0].argmax() == RIGHT
    np.testing.assert_allclose(labels.aux["goal"][0], [0.0, 4 / 19], rtol=1e-6)
    assert labels.aux["value"][0] > 0.5


def test_foragers_split_between_food_items():
    teacher = PlannerSpec("foraging_v0", {"map_size": 20}, depth=3).build()
    request = crafted_request(teacher, [[10, 10], [10, 10]], [0, 1], **foraging_state([[10, 4], [10, 16]], [1, 1]))
    labels = teacher.label(request)
    assert {int(labels.probs[0].argmax()), int(labels.probs[1].argmax())} == {LEFT, RIGHT}


def test_heavy_food_gets_level_helpers():
    teacher = PlannerSpec("foraging_v0", {"map_size": 20}, depth=2).build()
    positions = [[5, 5], [5, 6], [5, 7]]
    request = crafted_request(teacher, positions, [0, 1, 2], **foraging_state([[8, 6], [15, 15]], [2, 1]))
    goals = teacher.label(request).aux["goal"] * 19 + np.asarray(positions)
    heading_to_heavy = np.all(np.isclose(goals, [8, 6]), axis=1)
    assert heading_to_heavy.sum() == 2


def test_heavy_food_pays_only_with_enough_helpers():
    teacher = PlannerSpec("foraging_v0", {"map_size": 20}, depth=2).build()
    food = foraging_state([[8, 6]], [2])
    pair = teacher.label(crafted_request(teacher, [[8, 5], [8, 7]], [0, 1], **food))
    alone = teacher.label(crafted_request(teacher, [[8, 5]], [0], **food))
    assert pair.aux["value"][0] >= 1.0
    assert pair.probs[0, STAY] > pair.probs[0, LEFT]
    assert alone.aux["value"][0] < 1.0


def test_predator_chases_and_prey_flees():
    teacher = PlannerSpec("predator_prey_v0", {"map_size": 20}, depth=3).build()
    request = crafted_request(teacher, [[10, 10], [10, 13]], [0, 1], team_ids=np.array([0, 1], dtype=np.int8))
    labels = teacher.label(request)
    assert labels.probs[0].argmax() == RIGHT
    assert labels.probs[1, RIGHT] == pytest.approx(labels.probs[1].max())
    assert labels.probs[1, LEFT] < 0.05


def test_prey_at_wall_flees_sideways():
    teacher = PlannerSpec("predator_prey_v0", {"map_size": 20}, depth=3).build()
    request = crafted_request(teacher, [[10, 16], [10, 19]], [1], team_ids=np.array([0, 1], dtype=np.int8))
    assert teacher.label(request).probs[0].argmax() in (UP, DOWN)


def test_capture_needs_capture_predators():
    teacher = PlannerSpec("predator_prey_v0", {"map_size": 20, "capture_predators": 2}, depth=2).build()
    teams = np.array([0, 0, 1], dtype=np.int8)
    pair = teacher.label(crafted_request(teacher, [[10, 10], [10, 12], [10, 11]], [0], team_ids=teams))
    lone = teacher.label(crafted_request(teacher, [[10, 10], [2, 2], [10, 11]], [0], team_ids=teams))
    assert pair.aux["value"][0] >= 0.5
    assert lone.aux["value"][0] < 0.5


def test_capture_radius_reaches_farther():
    teams = np.array([0, 1], dtype=np.int8)
    values = {}
    for radius in (1, 2):
        teacher = PlannerSpec("predator_prey_v0", {"map_size": 20, "capture_radius": radius}, depth=2).build()
        values[radius] = teacher.label(crafted_request(teacher, [[10, 10], [10, 12]], [0], team_ids=teams)).aux["value"][0]
    assert values[2] >= 1.0
    assert values[2] > values[1] + 0.25


def test_spread_agents_take_different_targets():
    teacher = PlannerSpec("spread_v0", {"map_size": 20}, depth=3).build()
    targets = np.array([[5, 7], [5, 12]])
    labels = teacher.label(crafted_request(teacher, [[5, 6], [5, 9]], [0, 1], target_positions=targets))
    np.testing.assert_allclose(labels.aux["goal"][0], [0.0, 1 / 19], rtol=1e-6)
    np.testing.assert_allclose(labels.aux["goal"][1], [0.0, 3 / 19], rtol=1e-6)
    assert labels.probs[1].argmax() == RIGHT


def test_spread_agent_stays_alone_on_target():
    targets = np.array([[5, 5], [15, 15]])
    values = {}
    for weight in (0.0, 2.0):
        teacher = PlannerSpec("spread_v0", {"map_size": 20, "coverage_weight": weight}, depth=3).build()
        labels = teacher.label(crafted_request(teacher, [[5, 5], [7, 3]], [0], target_positions=targets))
        assert labels.probs[0].argmax() == STAY
        values[weight] = labels.aux["value"][0]
    assert values[0.0] == pytest.approx(1 / (1 - 0.95), rel=1e-5)
    assert values[2.0] == pytest.approx(2 * values[0.0], rel=1e-5)


def test_spread_agent_avoids_crowded_cell():
    teacher = PlannerSpec("spread_v0", {"map_size": 20}, depth=1).build()
    targets = np.array([[5, 5], [5, 6]])
    labels = teacher.label(crafted_request(teacher, [[5, 5], [5, 6]], [0], target_positions=targets))
    assert labels.probs[0, RIGHT] < labels.probs[0, STAY]


# Bad input.


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("foraging_v0", "food_levels"),
        ("foraging_v0", "positions"),
        ("predator_prey_v0", "team_ids"),
        ("spread_v0", "target_positions"),
    ],
)
def test_missing_state_key_raises(name, key):
    world, request = world_request(name)
    state = {other: value for other, value in request.state.items() if other != key}
    with pytest.raises(LabelInputError, match=rf"state is missing key '{key}', which the planner reads"):
        planner_for(world, depth=1).build().label(LabelRequest(request.obs, request.rows, state))


@pytest.mark.parametrize("name", WORLDS)
def test_rows_out_of_range_raise(name):
    world, request = world_request(name)
    rows = request.rows.copy()
    rows[1] = world.num_agents
    with pytest.raises(LabelInputError, match=r"rows\[1\] = 16 is out of range for a state of 16 agents"):
        planner_for(world, depth=1).build().label(LabelRequest(request.obs, rows, request.state))


def test_negative_row_raises():
    world, request = world_request("spread_v0")
    rows = request.rows.copy()
    rows[0] = -1
    with pytest.raises(LabelInputError, match=r"rows\[0\] = -1 is out of range"):
        planner_for(world, depth=1).build().label(LabelRequest(request.obs, rows, request.state))


def test_state_from_larger_map_raises():
    world, request = world_request("spread_v0", map_size=30)
    teacher = PlannerSpec("spread_v0", {"map_size": 10}, depth=1).build()
    with pytest.raises(LabelInputError, match=r"lies outside the 10x10 map of this planner; build the planner"):
        teacher.label(request)


def test_missing_state_raises():
    world, request = world_request("foraging_v0")
    with pytest.raises(LabelInputError, match=r"privileged teacher: the request needs rows and state"):
        planner_for(world, depth=1).build().label(LabelRequest(request.obs))


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("foraging_v0", "food_levels", np.ones(3, dtype=np.int64), r"food_levels'\] must be an integer array of shape"),
        ("foraging_v0", "food_levels", None, r"food_levels'\] must be >= 1, got 0"),
        ("foraging_v0", "positions", np.zeros((16, 3), dtype=np.int64), r"positions'\] must be an integer array of shape \(N, 2\)"),
        ("foraging_v0", "alive", np.ones(16, dtype=np.int64), r"alive'\] must be a bool array of shape \(16,\)"),
        ("predator_prey_v0", "team_ids", np.full(16, 2, dtype=np.int8), r"team_ids'\] must be 0 \(predator\) or 1 \(prey\), got 2"),
        ("spread_v0", "target_positions", np.zeros(4, dtype=np.int64), r"target_positions'\] must be an integer array of shape \(X, 2\)"),
    ],
)
def test_malformed_state_arrays_raise(name, key, value, match):
    world, request = world_request(name)
    state = dict(request.state)
    state[key] = np.zeros_like(state[key]) if value is None else value
    with pytest.raises(LabelInputError, match=match):
        planner_for(world, depth=1).build().label(LabelRequest(request.obs, request.rows, state))


def test_observation_shape_of_other_view_raises():
    world, request = world_request("foraging_v0", view_radius=2)
    teacher = PlannerSpec("foraging_v0", {"map_size": world.map_size}, depth=1).build()
    with pytest.raises(LabelInputError, match=r"obs must have shape \(B, 7, 7, 3\), got \(16, 5, 5, 3\)"):
        teacher.label(request)


# Specs.


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"world": "chess_v0"}, ValueError, r"no planner for world 'chess_v0'; planners exist for foraging_v0"),
        ({"world_options": {"map_size": 8, "gravity": 1}}, TypeError, r"unknown world option\(s\) gravity; valid options"),
        ({"world_options": {}}, ValueError, r"the map size is unknown; set world_options\['map_size'\] or num_agents"),
        ({"depth": 0}, ValueError, r"depth must be in \[1, 7\], got 0"),
        ({"depth": 8}, ValueError, r"depth must be in \[1, 7\], got 8"),
        ({"depth": True}, TypeError, r"depth must be an integer, got True"),
        ({"temperature": 0.0}, ValueError, r"temperature must be in \(0.0, inf\), got 0.0"),
        ({"temperature": "hot"}, TypeError, r"temperature must be a number, got 'hot'"),
        ({"discount": 1.0}, ValueError, r"discount must be in \(0.0, 1.0\), got 1.0"),
        ({"num_agents": 0}, ValueError, r"num_agents must be >= 1, got 0"),
        ({"neighbours": 0}, ValueError, r"neighbours must be >= 1, got 0"),
    ],
)
def test_spec_rejects_bad_arguments(arguments, error, match):
    values = {"world": "foraging_v0", "world_options": {"map_size": 8}, **arguments}
    with pytest.raises(error, match=match):
        PlannerSpec(**values)


def test_spec_build_rejects_bad_world_option_value():
    with pytest.raises(ValueError, match=r"map_size must be >= 2, got 1"):
        PlannerSpec("spread_v0", {"map_size": 1}).build()


def test_spec_is_picklable_and_hashable():
    spec = PlannerSpec("predator_prey_v0", {"map_size": 16, "capture_radius": 2}, depth=2)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(PlannerSpec("predator_prey_v0", {"capture_radius": 2, "map_size": 16}, depth=2))


def test_spec_from_world_spec_copies_the_world():
    world_spec = WorldSpec("foraging_v0", num_agents=40, seed=3, options={"max_food_level": 3})
    teacher = PlannerSpec.from_world_spec(world_spec, depth=1).build()
    assert teacher.map_size == world_spec.build().map_size
    assert teacher.max_food_level == 3


def test_spec_from_adapted_env_raises():
    world_spec = WorldSpec("simple_spread", num_agents=3, entry_point="mpe2.simple_spread_v3:parallel_env")
    with pytest.raises(ValueError, match=r"simple_spread is an adapted PettingZoo env"):
        PlannerSpec.from_world_spec(world_spec)


# The local heuristic.


def heuristic_for(name: str, **options):
    world = sim.make_world(name, num_agents=4, seed=0, **options)
    return world, LocalHeuristicPolicySpec(seed=0).build(world, seed=1)


def test_heuristic_forager_steps_toward_visible_food():
    world, policy = heuristic_for("foraging_v0")
    obs = np.zeros((1, *world.observation_shape), dtype=np.float32)
    obs[0, 3, 6, 2] = 0.5
    assert policy.act(obs, np.array([True]), None)[0] == RIGHT


def test_heuristic_predator_chases_and_prey_flees():
    world, policy = heuristic_for("predator_prey_v0")
    obs = np.zeros((2, *world.observation_shape), dtype=np.float32)
    obs[0, :, :, 3] = 1.0
    obs[0, 3, 5, 2] = 1.0  # prey to the right of the predator
    obs[1, 3, 5, 1] = 1.0  # predator to the right of the prey
    actions = policy.act(obs, np.array([True, True]), None)
    assert actions.tolist() == [RIGHT, LEFT]


def test_heuristic_spread_agent_keeps_its_target():
    world, policy = heuristic_for("spread_v0")
    obs = np.zeros((1, *world.observation_shape), dtype=np.float32)
    obs[0, 3, 3, 2] = 1.0
    assert policy.act(obs, np.array([True]), None)[0] == STAY


def test_heuristic_random_walk_avoids_walls():
    world, policy = heuristic_for("spread_v0")
    obs = np.zeros((200, *world.observation_shape), dtype=np.float32)
    obs[:, :3, :, 0] = 1.0  # wall above
    obs[:, :, :3, 0] = 1.0  # wall to the left
    actions = policy.act(obs, np.ones(200, dtype=bool), None)
    assert set(actions.tolist()) == {STAY, DOWN, RIGHT}


def test_heuristic_respects_mask_and_dead_rows():
    world, policy = heuristic_for("foraging_v0")
    obs = np.zeros((3, *world.observation_shape), dtype=np.float32)
    obs[:, 3, 6, 2] = 0.5
    mask = np.ones((3, 5), dtype=bool)
    mask[0, RIGHT] = False
    actions = policy.act(obs, np.array([True, True, False]), mask)
    assert actions[0] != RIGHT
    assert actions[1] == RIGHT
    assert actions[2] == NO_ACTION


def test_heuristic_rejects_other_worlds():
    world = types.SimpleNamespace(name="pursuit_v4", view_radius=3)
    with pytest.raises(ValueError, match=r"the local heuristic supports foraging_v0, .* got world 'pursuit_v4'"):
        LocalHeuristicPolicySpec().build(world, seed=0)


# Returns: the planner beats the local heuristic, which beats random actions.


def mean_team_returns(name: str, policies: dict, *, num_agents: int, max_steps: int, episodes: int) -> np.ndarray:
    """Mean episode return per team, with ``policies[team]`` acting for each team's rows."""
    world = sim.make_world(name, num_agents=num_agents, seed=0, max_steps=max_steps)
    built = {team: spec.build(world, seed=100 + team) for team, spec in policies.items()}
    totals = np.zeros(num_agents)
    for episode in range(episodes):
        obs = world.reset(seed=episode)
        while not world.episode_over:
            alive = world.alive.copy()
            actions = np.full(num_agents, NO_ACTION, dtype=np.int64)
            for team, policy in built.items():
                rows = world.team_ids == team
                actions[rows] = policy.act(obs, alive & rows, None)[rows]
            step = world.step(actions)
            totals += step.reward
            obs = step.obs
    return np.array([totals[world.team_ids == team].mean() / episodes for team in range(len(world.team_names))])


@pytest.mark.parametrize(
    ("name", "num_agents", "max_steps", "margin"),
    [("foraging_v0", 24, 60, 1.8), ("spread_v0", 16, 40, 1.25)],
)
def test_planner_beats_heuristic_beats_random(name, num_agents, max_steps, margin):
    planner = TeacherPolicySpec(PlannerSpec(name, {"max_steps": max_steps}, num_agents=num_agents, depth=TEST_DEPTH))
    returns = {
        label: mean_team_returns(name, {0: spec}, num_agents=num_agents, max_steps=max_steps, episodes=6)[0]
        for label, spec in [("planner", planner), ("heuristic", LocalHeuristicPolicySpec()), ("random", RandomPolicySpec())]
    }
    assert returns["planner"] > margin * returns["heuristic"]
    assert returns["heuristic"] > 2 * returns["random"]


@pytest.fixture(scope="module")
def predator_prey_returns():
    """Per-team returns of predator_prey_v0 for pairs of (predator policy, prey policy)."""
    options = {"max_steps": 60}
    planner = TeacherPolicySpec(PlannerSpec("predator_prey_v0", options, num_agents=32, depth=TEST_DEPTH))
    deeper = TeacherPolicySpec(PlannerSpec("predator_prey_v0", options, num_agents=32, depth=3))
    heuristic, random = LocalHeuristicPolicySpec(), RandomPolicySpec()
    pairs = {
        ("planner", "heuristic"): (planner, heuristic),
        ("heuristic", "heuristic"): (heuristic, heuristic),
        ("random", "heuristic"): (random, heuristic),
        ("heuristic", "planner"): (heuristic, deeper),
        ("heuristic", "random"): (heuristic, random),
    }
    return {
        pair: mean_team_returns("predator_prey_v0", {0: predators, 1: prey}, num_agents=32, max_steps=60, episodes=4)
        for pair, (predators, prey) in pairs.items()
    }


def test_planner_predators_beat_heuristic_predators(predator_prey_returns):
    planner = predator_prey_returns[("planner", "heuristic")][0]
    heuristic = predator_prey_returns[("heuristic", "heuristic")][0]
    random = predator_prey_returns[("random", "heuristic")][0]
    assert planner > 1.3 * heuristic
    assert heuristic > 2 * random


def test_planner_prey_beat_heuristic_prey(predator_prey_returns):
    planner = predator_prey_returns[("heuristic", "planner")][1]
    heuristic = predator_prey_returns[("heuristic", "heuristic")][1]
    random = predator_prey_returns[("heuristic", "random")][1]
    assert planner > heuristic + 0.2
    assert heuristic > random + 0.5
