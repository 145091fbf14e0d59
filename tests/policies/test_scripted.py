"""Scripted privileged teachers on real MAgent2, SISL and MPE2 envs wrapped by sim.from_pettingzoo."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from magent2.environments import battle_v4
from magent2.environments.battle import battle as magent_battle
from mpe2 import simple_spread_v3
from pettingzoo.sisl import pursuit_v5
from scipy.optimize import linear_sum_assignment

import sim
from policies.scripted import (
    ScriptedBattleSpec,
    ScriptedPursuitSpec,
    ScriptedSpreadSpec,
)
from policies.scripted.battle import (
    BATTLE_ATTACK_BASE,
    BATTLE_ATTACK_OFFSETS,
    BATTLE_MOVE_OFFSETS,
    BATTLE_STAY_ACTION,
)
from policies.scripted.pursuit import PURSUIT_MOVES, PURSUIT_STAY_ACTION
from policies.scripted.spread import SPREAD_PUSH
from policies.teacher import LabelInputError, LabelRequest

SEEDS = (0, 1, 2)
SPECS = (ScriptedBattleSpec(), ScriptedPursuitSpec(), ScriptedSpreadSpec())


# Worlds.


class PlacedBattle(magent_battle._parallel_env):
    """battle_v4 with red and blue agents on given (x, y) cells instead of two squares."""

    def __init__(self, red, blue, *, map_size=12, max_cycles=20):
        self.placement = (red, blue)
        super().__init__(
            map_size, False, dict(magent_battle.default_reward_args), max_cycles, False
        )

    def generate_map(self):
        for handle, cells in zip(self.handles, self.placement, strict=True):
            self.env.add_agents(handle, method="custom", pos=[[x, y, 0] for x, y in cells])


def placed_battle(red, blue):
    """Return the world reset and stepped once with every agent staying put.

    magent2 0.3.4 counts the teams before it places them on reset, so on the first step
    after a reset every team but the first is sent the first team's actions. The step
    here, where everyone stays, leaves the tests with correct team sizes.
    """
    world = sim.from_pettingzoo(PlacedBattle(red, blue), seed=0)
    world.reset(seed=0)
    world.step(np.full(world.num_agents, BATTLE_STAY_ACTION))
    return world


def battle_world(seed, max_cycles=60):
    return sim.from_pettingzoo(battle_v4.parallel_env(map_size=16, max_cycles=max_cycles), seed=seed)


def pursuit_world(seed, max_cycles=60):
    return sim.from_pettingzoo(pursuit_v5.parallel_env(max_cycles=max_cycles), seed=seed)


def spread_world(seed, num_agents=3, max_cycles=25):
    return sim.from_pettingzoo(simple_spread_v3.parallel_env(N=num_agents, max_cycles=max_cycles), seed=seed)


def request_for(world, obs, rows=None, **overrides):
    state = world.state()
    if rows is None:
        rows = np.flatnonzero(state["alive"])
    fields = dict(obs=obs[rows], rows=rows, state=state)
    fields.update(overrides)
    return LabelRequest(**fields)


def run_episode(world, teacher, *, scripted, seed):
    """Play one episode with uniform random actions, the rows in ``scripted`` driven by the teacher's argmax.

    Both arms of a comparison draw the same random actions for every row, so the only
    difference between them is who drives the scripted rows. Returns (N,) returns per row.
    """
    rng = np.random.default_rng(seed)
    obs = world.reset(seed=seed)
    returns = np.zeros(world.num_agents)
    while not world.episode_over:
        actions = rng.integers(0, world.num_actions, world.num_agents)
        state = world.state()
        rows = np.flatnonzero(scripted & state["alive"])
        if rows.size:
            labels = teacher.label(LabelRequest(obs[rows], rows=rows, state=state))
            actions[rows] = labels.probs.argmax(axis=1)
        step = world.step(actions)
        obs = step.obs
        returns += step.reward
    return returns


# MAgent2 battle_v4: the action layout, checked against the env.


@pytest.mark.parametrize("action", range(13))
def test_battle_move_follows_offset(action):
    world = placed_battle(red=[(6, 6)], blue=[(1, 1)])
    actions = np.array([action, BATTLE_STAY_ACTION])
    before = world.state()["positions"][0].copy()
    world.step(actions)
    moved = world.state()["positions"][0] - before
    np.testing.assert_array_equal(moved, BATTLE_MOVE_OFFSETS[action])


@pytest.mark.parametrize("attack", range(8))
def test_battle_attack_hits_offset(attack):
    neighbours = [(6 + int(dx), 6 + int(dy)) for dx, dy in BATTLE_ATTACK_OFFSETS]
    world = placed_battle(red=[(6, 6)], blue=neighbours)
    np.testing.assert_array_equal(world.state()["positions"][1:], neighbours)
    before = world.state()["hp"]

    world.step(np.array([BATTLE_ATTACK_BASE + attack] + [BATTLE_STAY_ACTION] * 8))
    hit = np.flatnonzero(world.state()["hp"] < before - 0.1)
    assert hit.tolist() == [1 + attack]


@pytest.mark.parametrize("attack", range(8))
def test_battle_teacher_attacks_weakest_neighbour(attack):
    neighbours = [(6 + int(dx), 6 + int(dy)) for dx, dy in BATTLE_ATTACK_OFFSETS]
    world = placed_battle(red=[(6, 6)], blue=neighbours)
    obs = world.step(np.array([BATTLE_ATTACK_BASE + attack] + [BATTLE_STAY_ACTION] * 8)).obs

    labels = ScriptedBattleSpec().build().label(request_for(world, obs, rows=np.array([0])))
    assert int(labels.probs[0].argmax()) == BATTLE_ATTACK_BASE + attack
    np.testing.assert_array_equal(labels.aux["goal"][0], BATTLE_ATTACK_OFFSETS[attack])


def test_battle_teacher_moves_toward_enemy():
    world = placed_battle(red=[(3, 6)], blue=[(8, 6)])
    obs = world.step(np.array([BATTLE_STAY_ACTION, BATTLE_STAY_ACTION])).obs
    labels = ScriptedBattleSpec().build().label(request_for(world, obs))
    np.testing.assert_array_equal(labels.aux["goal"], [[5, 0], [-5, 0]])
    assert labels.probs.argmax(axis=1).tolist() == [8, 4]  # (+2, 0) and (-2, 0)


def test_battle_teacher_avoids_taken_cells():
    # Blue at (8, 6) takes the cell that the move (+2, 0) would reach.
    world = placed_battle(red=[(6, 6)], blue=[(8, 6), (10, 2)])
    obs = world.step(np.full(3, BATTLE_STAY_ACTION)).obs
    labels = ScriptedBattleSpec().build().label(request_for(world, obs, rows=np.array([0])))
    assert labels.probs[0, 8] < 1e-6


def test_battle_teacher_respects_mask():
    neighbours = [(7, 6)]
    world = placed_battle(red=[(6, 6)], blue=neighbours)
    obs = world.step(np.full(2, BATTLE_STAY_ACTION)).obs
    mask = np.ones((1, 21), dtype=bool)
    mask[0, BATTLE_ATTACK_BASE:] = False
    labels = ScriptedBattleSpec().build().label(request_for(world, obs, rows=np.array([0]), action_mask=mask))
    assert labels.probs[0, BATTLE_ATTACK_BASE:].max() == 0.0
    assert math.isclose(float(labels.probs.sum()), 1.0, rel_tol=1e-5)


def test_battle_teacher_idles_dead_rows():
    world = placed_battle(red=[(6, 6)], blue=[(7, 6)])
    obs = world.reset(seed=0)
    state = dict(world.state())
    state["alive"] = np.array([False, True])
    labels = ScriptedBattleSpec().build().label(LabelRequest(obs[:1], rows=np.array([0]), state=state))
    assert labels.probs[0, BATTLE_STAY_ACTION] == pytest.approx(1.0)
    np.testing.assert_array_equal(labels.aux["goal"], [[0, 0]])


@pytest.mark.parametrize("team", [0, 1])
def test_battle_teacher_beats_random(team):
    teacher = ScriptedBattleSpec().build()
    world = battle_world(0)
    ours = world.team_ids == team
    for seed in SEEDS:
        scripted = run_episode(battle_world(seed), teacher, scripted=ours, seed=seed)[ours].sum()
        random = run_episode(battle_world(seed), teacher, scripted=np.zeros_like(ours), seed=seed)[ours].sum()
        # Six kills pay 30; random play pays about -15 over 60 steps.
        assert scripted > random + 20, f"seed {seed}: scripted {scripted:.2f}, random {random:.2f}"


# SISL pursuit_v5.


@pytest.mark.parametrize("action", range(5))
def test_pursuit_action_moves_pursuers(action):
    world = pursuit_world(3)
    world.reset(seed=3)
    layer = world.env.unwrapped.env.pursuer_layer
    before = np.array([layer.get_position(i) for i in range(8)])
    world.step(np.full(8, action))
    moved = np.array([layer.get_position(i) for i in range(8)]) - before
    unblocked = moved.any(axis=1) if action != PURSUIT_STAY_ACTION else np.ones(8, dtype=bool)
    assert unblocked.sum() >= 4
    np.testing.assert_array_equal(moved[unblocked], np.tile(PURSUIT_MOVES[action], (unblocked.sum(), 1)))


def test_pursuit_global_state_layout():
    world = pursuit_world(0)
    world.reset(seed=0)
    image = world.state()["global"]
    layer = world.env.unwrapped.env.pursuer_layer
    for i in range(8):
        x, y = layer.get_position(i)
        assert image[y, x, 1] >= 1, f"pursuer {i} at x={x}, y={y} is not in global[y, x, 1]"


@pytest.mark.parametrize("steps", [0, 5])
def test_pursuit_goals_surround_evaders(steps):
    teacher = ScriptedPursuitSpec().build()
    world = pursuit_world(1)
    obs = world.reset(seed=1)
    for _ in range(steps):
        obs = world.step(teacher.label(request_for(world, obs)).probs.argmax(axis=1)).obs

    labels = teacher.label(request_for(world, obs))
    layer = world.env.unwrapped.env.pursuer_layer
    evaders = world.state()["global"][..., 2] > 0
    for i in range(8):
        goal = np.array(layer.get_position(i)) + labels.aux["goal"][i].astype(int)
        near = [(goal[0] + dx, goal[1] + dy) for dx, dy in PURSUIT_MOVES[:4]]
        assert any(0 <= x < 16 and 0 <= y < 16 and evaders[y, x] for x, y in near), (
            f"pursuer {i}: goal {goal.tolist()} is not next to an evader"
        )


@pytest.mark.parametrize("rows", [[3, 5], [5, 3, 5], [0]])
def test_pursuit_subset_matches_full_request(rows):
    teacher = ScriptedPursuitSpec().build()
    world = pursuit_world(4)
    obs = world.reset(seed=4)
    full = teacher.label(request_for(world, obs))
    subset = teacher.label(request_for(world, obs, rows=np.array(rows)))
    np.testing.assert_array_equal(subset.probs, full.probs[rows])
    np.testing.assert_array_equal(subset.aux["goal"], full.aux["goal"][rows])


def test_pursuit_rejects_obs_of_another_step():
    teacher = ScriptedPursuitSpec().build()
    world = pursuit_world(2)
    old_obs = world.reset(seed=2)
    world.step(np.zeros(8, dtype=np.int64))
    with pytest.raises(LabelInputError, match="matches no pursuer cell"):
        teacher.label(request_for(world, old_obs))


def test_pursuit_rejects_wrong_obs_shape():
    world = pursuit_world(2)
    world.reset(seed=2)
    request = LabelRequest(np.zeros((8, 6, 6, 3), np.float32), rows=np.arange(8), state=world.state())
    with pytest.raises(LabelInputError, match=r"obs must have shape \(B, V, V, 3\) with V odd"):
        ScriptedPursuitSpec().build().label(request)


def test_pursuit_teacher_beats_random():
    teacher = ScriptedPursuitSpec().build()
    everyone = np.ones(8, dtype=bool)
    for seed in SEEDS:
        world = pursuit_world(seed)
        scripted = run_episode(world, teacher, scripted=everyone, seed=seed).sum()
        scripted_caught = int(world.env.unwrapped.env.evaders_gone.sum())
        world = pursuit_world(seed)
        random = run_episode(world, teacher, scripted=~everyone, seed=seed).sum()
        random_caught = int(world.env.unwrapped.env.evaders_gone.sum())
        assert scripted_caught >= random_caught + 10, f"seed {seed}: caught {scripted_caught} vs {random_caught}"
        assert scripted > random + 100, f"seed {seed}: return {scripted:.1f} vs {random:.1f}"


# MPE2 simple_spread_v3.


@pytest.mark.parametrize("action", range(1, 5))
def test_spread_action_pushes_along_axis(action):
    world = spread_world(0, num_agents=1)
    world.reset(seed=0)
    agent = world.env.unwrapped.world.agents[0]
    before = agent.state.p_pos.copy()
    world.step(np.array([action]))
    world.step(np.array([0]))
    moved = agent.state.p_pos - before
    direction = SPREAD_PUSH[action]
    assert moved @ direction > 0.01
    assert abs(moved @ direction[::-1]) < 1e-9


def test_spread_goals_cover_landmarks():
    world = spread_world(4)
    obs = world.reset(seed=4)
    world.step(np.array([2, 3, 4]))
    obs = world.step(np.array([1, 0, 2])).obs
    labels = ScriptedSpreadSpec().build().label(request_for(world, obs))

    mpe_world = world.env.unwrapped.world
    positions = np.array([agent.state.p_pos for agent in mpe_world.agents])
    landmarks = np.array([landmark.state.p_pos for landmark in mpe_world.landmarks])
    _, assigned = linear_sum_assignment(np.linalg.norm(positions[:, None] - landmarks[None], axis=-1))
    np.testing.assert_allclose(labels.aux["goal"], landmarks[assigned] - positions, atol=1e-5)


def test_spread_teacher_beats_random():
    teacher = ScriptedSpreadSpec().build()
    everyone = np.ones(3, dtype=bool)
    for seed in SEEDS:
        scripted = run_episode(spread_world(seed), teacher, scripted=everyone, seed=seed).sum()
        random = run_episode(spread_world(seed), teacher, scripted=~everyone, seed=seed).sum()
        assert scripted > random + 20, f"seed {seed}: scripted {scripted:.1f}, random {random:.1f}"


def test_spread_rejects_wrong_num_agents():
    world = spread_world(0)
    obs = world.reset(seed=0)
    with pytest.raises(LabelInputError, match=r"has 54 numbers, but simple_spread_v3 with 4 agents"):
        ScriptedSpreadSpec(num_agents=4).build().label(request_for(world, obs))


# Every scripted teacher.


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_spec_pickles_and_builds(spec):
    teacher = pickle.loads(pickle.dumps(spec)).build()
    assert teacher.teacher_id.startswith("scripted/")
    assert teacher.requires_state
    assert teacher.aux_shapes == {"goal": (2,)}


@pytest.mark.parametrize("spec_type", [type(spec) for spec in SPECS], ids=lambda spec_type: spec_type.__name__)
@pytest.mark.parametrize("temperature", [0, -1.0, math.nan, math.inf, "hot", True])
def test_spec_rejects_bad_temperature(spec_type, temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        spec_type(temperature=temperature)


@pytest.mark.parametrize("hp_weight", [-1.0, math.nan, "heavy"])
def test_battle_spec_rejects_bad_hp_weight(hp_weight):
    with pytest.raises(ValueError, match="hp_weight must be a non-negative finite number"):
        ScriptedBattleSpec(hp_weight=hp_weight)


@pytest.mark.parametrize("num_agents", [0, 2.5, True])
def test_spread_spec_rejects_bad_num_agents(num_agents):
    with pytest.raises(ValueError, match="num_agents must be a positive integer"):
        ScriptedSpreadSpec(num_agents=num_agents)


WORLDS = {
    "ScriptedBattleSpec": lambda: battle_world(0),
    "ScriptedPursuitSpec": lambda: pursuit_world(0),
    "ScriptedSpreadSpec": lambda: spread_world(0),
}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_teacher_requires_state(spec):
    world = WORLDS[type(spec).__name__]()
    obs = world.reset(seed=0)
    with pytest.raises(LabelInputError, match="is a privileged teacher"):
        spec.build().label(LabelRequest(obs))


@pytest.mark.parametrize(
    ("spec", "key"),
    [(SPECS[0], "positions"), (SPECS[0], "hp"), (SPECS[1], "global"), (SPECS[2], "global")],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_teacher_rejects_state_without_key(spec, key):
    world = WORLDS[type(spec).__name__]()
    obs = world.reset(seed=0)
    request = request_for(world, obs)
    state = {name: value for name, value in request.state.items() if name != key}
    with pytest.raises(LabelInputError, match=f"state has no '{key}' entry"):
        spec.build().label(LabelRequest(request.obs, rows=request.rows, state=state))


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_teacher_rejects_rows_out_of_range(spec):
    world = WORLDS[type(spec).__name__]()
    obs = world.reset(seed=0)
    rows = np.array([world.num_agents])
    request = LabelRequest(obs[:1], rows=rows, state=world.state())
    with pytest.raises(LabelInputError, match=f"row {world.num_agents} is out of range"):
        spec.build().label(request)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_probs_soften_with_temperature(spec):
    world = WORLDS[type(spec).__name__]()
    obs = world.reset(seed=0)
    request = request_for(world, obs)
    sharp = spec.build().label(request).probs
    soft = type(spec)(temperature=spec.temperature * 20).build().label(request).probs
    np.testing.assert_array_equal(sharp.argmax(axis=1), soft.argmax(axis=1))
    assert soft.max(axis=1).mean() < sharp.max(axis=1).mean()


@pytest.mark.parametrize(
    ("spec", "key", "value", "message"),
    [
        (SPECS[0], "positions", np.zeros((12, 3), np.float32), r"state\['positions'\] must have shape \(N, 2\)"),
        (SPECS[0], "global", np.zeros((16, 16), np.float32), r"state\['global'\] must be the \(W, H, C\) map"),
        (SPECS[1], "global", np.zeros((16, 16, 2), np.float32), r"state\['global'\] must be the \(Y, X, 3\) image"),
    ],
    ids=["battle-positions", "battle-global", "pursuit-global"],
)
def test_teacher_rejects_bad_state_shape(spec, key, value, message):
    world = WORLDS[type(spec).__name__]()
    obs = world.reset(seed=0)
    request = request_for(world, obs)
    state = {**request.state, key: value}
    with pytest.raises(LabelInputError, match=message):
        spec.build().label(LabelRequest(request.obs, rows=request.rows, state=state))
