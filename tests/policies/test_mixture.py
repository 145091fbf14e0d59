"""MixtureTeacher: fixed, group and confidence mixing of tiny teachers and of real scripted teachers."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
from magent2.environments import battle_v4

import sim
from policies.mixture import MixtureSpec, MixtureTeacher
from policies.scripted import ScriptedBattleSpec, ScriptedPursuitSpec
from policies.teacher import LabelInputError, LabelRequest, Teacher


@dataclasses.dataclass(frozen=True)
class FixedSpec:
    """A teacher that gives every state the same probabilities and goal."""

    probs: tuple[float, ...]
    teacher_id: str = "test/fixed"
    version: str = "1"
    goal: tuple[float, float] = (0.0, 0.0)
    has_goal: bool = True
    requires_state: bool = False
    flops: float | None = None
    params: int | None = None
    observation_shape: tuple[int, ...] | None = None

    def build(self) -> FixedTeacher:
        return FixedTeacher(self)


class FixedTeacher(Teacher):
    def __init__(self, spec: FixedSpec) -> None:
        super().__init__()
        self.spec = spec
        self.teacher_id = spec.teacher_id
        self.version = spec.version
        self.num_actions = len(spec.probs)
        self.requires_state = spec.requires_state
        self.observation_shape = spec.observation_shape
        self.aux_shapes = {"goal": (2,)} if spec.has_goal else {}
        self.calls = 0

    def _label_many(self, requests):
        self.calls += 1
        return super()._label_many(requests)

    def _label(self, request):
        probs = np.tile(np.asarray(self.spec.probs, dtype=np.float64), (request.size, 1))  # (B, A)
        if request.action_mask is not None:
            probs = np.where(request.action_mask, probs, 0.0)
            probs /= probs.sum(axis=1, keepdims=True)
        return probs, {"goal": np.tile(self.spec.goal, (request.size, 1))}

    def flops_per_label(self):
        return self.spec.flops

    def param_count(self):
        return self.spec.params


SURE = FixedSpec((1.0, 0.0, 0.0, 0.0), teacher_id="test/sure", goal=(1.0, 1.0))
UNSURE = FixedSpec((0.25, 0.25, 0.25, 0.25), teacher_id="test/unsure", goal=(2.0, 2.0))
SPLIT = FixedSpec((0.0, 0.5, 0.5, 0.0), teacher_id="test/split", goal=(3.0, 3.0))


def obs(batch: int) -> np.ndarray:
    return np.zeros((batch, 2), dtype=np.float32)


def team_request(team_ids, rows=None) -> LabelRequest:
    team_ids = np.asarray(team_ids, dtype=np.int8)
    rows = np.arange(team_ids.size) if rows is None else np.asarray(rows)
    state = {"alive": np.ones(team_ids.size, dtype=bool), "team_ids": team_ids}
    return LabelRequest(obs(rows.size), rows=rows, state=state)


def battle_world(seed: int = 0):
    world = sim.from_pettingzoo(battle_v4.parallel_env(map_size=16, max_cycles=40), seed=seed)
    return world, world.reset(seed=seed)


# Fixed mode.


def test_fixed_mode_mixes_with_normalised_weights():
    teacher = MixtureSpec((SURE, SPLIT), weights=(1.0, 3.0)).build()
    labels = teacher.label(LabelRequest(obs(2)))
    np.testing.assert_allclose(labels.probs, [[0.25, 0.375, 0.375, 0.0]] * 2, atol=1e-6)


def test_fixed_mode_defaults_to_equal_weights():
    labels = MixtureSpec((SURE, UNSURE)).build().label(LabelRequest(obs(1)))
    np.testing.assert_allclose(labels.probs, [[0.625, 0.125, 0.125, 0.125]], atol=1e-6)


def test_zero_weight_child_labels_nothing():
    teacher = MixtureSpec((SURE, UNSURE), weights=(1.0, 0.0)).build()
    labels = teacher.label(LabelRequest(obs(3)))
    np.testing.assert_allclose(labels.probs[:, 0], 1.0)
    assert teacher.children[1].cost().labels == 0


def test_label_many_asks_each_child_once():
    teacher = MixtureSpec((SURE, SPLIT)).build()
    results = teacher.label_many([LabelRequest(obs(2)), LabelRequest(obs(5))])
    assert [labels.size for labels in results] == [2, 5]
    assert [child.calls for child in teacher.children] == [1, 1]


def test_mixture_respects_action_mask():
    mask = np.array([[False, True, True, True]])
    labels = MixtureSpec((UNSURE, SPLIT)).build().label(LabelRequest(obs(1), action_mask=mask))
    assert labels.probs[0, 0] == 0.0
    np.testing.assert_allclose(labels.probs, [[0.0, 2 / 6 * 0.5 + 0.25, 2 / 6 * 0.5 + 0.25, 1 / 6]], atol=1e-6)


# Group mode.


def test_group_mode_gates_by_team_name():
    spec = MixtureSpec((SURE, SPLIT), mode="group", groups={"red": 0, "blue": 1}, team_names=("red", "blue"))
    teacher = spec.build()
    labels = teacher.label(team_request([0, 1, 1, 0, 1]))
    np.testing.assert_allclose(labels.probs[[0, 3]], [SURE.probs] * 2)
    np.testing.assert_allclose(labels.probs[[1, 2, 4]], [SPLIT.probs] * 3)
    assert [child.cost().labels for child in teacher.children] == [2, 3]


def test_group_mode_takes_team_index_and_weights():
    spec = MixtureSpec((SURE, SPLIT), mode="group", groups={0: (1.0, 1.0), 1: 1})
    labels = spec.build().label(team_request([0, 1], rows=[1, 0]))
    np.testing.assert_allclose(labels.probs, [SPLIT.probs, [0.5, 0.25, 0.25, 0.0]], atol=1e-6)


def test_group_mode_rejects_uncovered_team():
    teacher = MixtureSpec((SURE, SPLIT), mode="group", groups={0: 0}).build()
    with pytest.raises(LabelInputError, match=r"row 1 is in team 1, which groups does not cover"):
        teacher.label(team_request([0, 1]))


def test_group_mode_rejects_row_out_of_range():
    teacher = MixtureSpec((SURE, SPLIT), mode="group", groups={0: 0, 1: 1}).build()
    with pytest.raises(LabelInputError, match=r"row 5 is out of range for state\['team_ids'\] of 2 agents"):
        teacher.label(team_request([0, 1], rows=[0, 5]))


def test_group_mode_needs_team_ids():
    teacher = MixtureSpec((SURE, SPLIT), mode="group", groups={0: 0}).build()
    request = LabelRequest(obs(1), rows=np.array([0]), state={"alive": np.ones(1, dtype=bool)})
    with pytest.raises(LabelInputError, match=r"group mode reads state\['team_ids'\]"):
        teacher.label(request)


def test_group_mode_needs_rows_and_state():
    teacher = MixtureSpec((SURE, SPLIT), mode="group", groups={0: 0}).build()
    with pytest.raises(LabelInputError, match="is a privileged teacher"):
        teacher.label(LabelRequest(obs(1)))


# Confidence mode.


def test_confidence_mode_trusts_the_sure_teacher():
    # exp(-entropy): 1 for the one-hot label, 1/4 for the uniform one, so weights 0.8 and 0.2.
    labels = MixtureSpec((SURE, UNSURE), mode="confidence").build().label(LabelRequest(obs(1)))
    np.testing.assert_allclose(labels.probs, [[0.85, 0.05, 0.05, 0.05]], atol=1e-6)


def test_confidence_mode_scales_by_prior_weights():
    spec = MixtureSpec((SURE, UNSURE), mode="confidence", weights=(1.0, 4.0))
    labels = spec.build().label(LabelRequest(obs(1)))
    np.testing.assert_allclose(labels.probs, [[0.625, 0.125, 0.125, 0.125]], atol=1e-6)
    np.testing.assert_allclose(labels.aux["goal"], [[1.0, 1.0]])  # a tie goes to the first child


# Auxiliary targets, identity, cost.


@pytest.mark.parametrize(
    ("weights", "goal"), [((0.3, 0.7), (3.0, 3.0)), ((0.7, 0.3), (1.0, 1.0)), ((0.5, 0.5), (1.0, 1.0))]
)
def test_aux_comes_from_highest_weight_child(weights, goal):
    labels = MixtureSpec((SURE, SPLIT), weights=weights).build().label(LabelRequest(obs(2)))
    np.testing.assert_allclose(labels.aux["goal"], [goal] * 2)


def test_aux_dropped_unless_every_child_has_it():
    teacher = MixtureSpec((SURE, dataclasses.replace(SPLIT, has_goal=False))).build()
    assert teacher.aux_shapes == {}
    assert teacher.label(LabelRequest(obs(1))).aux == {}


@pytest.mark.parametrize(
    ("privileged", "mode", "requires_state"),
    [((False, False), "fixed", False), ((False, True), "fixed", True), ((False, True), "confidence", True),
     ((False, False), "group", True)],
)
def test_requires_state_follows_children_and_mode(privileged, mode, requires_state):
    children = (
        dataclasses.replace(SURE, requires_state=privileged[0]),
        dataclasses.replace(SPLIT, requires_state=privileged[1]),
    )
    groups = {0: 0} if mode == "group" else None
    assert MixtureSpec(children, mode=mode, groups=groups).build().requires_state is requires_state


def test_identity_names_children_and_tracks_versions():
    teacher = MixtureSpec((SURE, SPLIT)).build()
    assert teacher.teacher_id == "mixture(test/sure,test/split)"
    assert teacher.version == MixtureSpec((SURE, SPLIT)).build().version
    newer_child = MixtureSpec((SURE, dataclasses.replace(SPLIT, version="2"))).build()
    other_weights = MixtureSpec((SURE, SPLIT), weights=(1.0, 2.0)).build()
    other_mode = MixtureSpec((SURE, SPLIT), mode="confidence").build()
    versions = {teacher.version, newer_child.version, other_weights.version, other_mode.version}
    assert len(versions) == 4
    assert teacher.label(LabelRequest(obs(1))).teacher_version == teacher.version


@pytest.mark.parametrize(
    ("flops", "params", "expected_flops", "expected_params"),
    [((10.0, 20.0), (3, 4), 30.0, 7), ((10.0, None), (None, 5), None, 5), ((None, None), (None, None), None, None)],
)
def test_cost_sums_children(flops, params, expected_flops, expected_params):
    children = (
        dataclasses.replace(SURE, flops=flops[0], params=params[0]),
        dataclasses.replace(SPLIT, flops=flops[1], params=params[1]),
    )
    teacher = MixtureSpec(children).build()
    teacher.label(LabelRequest(obs(4)))
    cost = teacher.cost()
    assert cost.flops_per_label == expected_flops
    assert cost.params == expected_params
    assert cost.labels == 4
    assert cost.us_per_label is not None and cost.us_per_label > 0


def test_describe_lists_children():
    teacher = MixtureSpec((SURE, SPLIT)).build()
    teacher.label(LabelRequest(obs(2)))
    description = teacher.describe()
    assert description["mode"] == "fixed"
    assert [child["teacher_id"] for child in description["children"]] == ["test/sure", "test/split"]
    assert [child["labels"] for child in description["children"]] == [2, 2]


def test_spec_pickles():
    spec = MixtureSpec((SURE, SPLIT), mode="group", groups={"red": 0, "blue": (1, 1)}, team_names=("red", "blue"))
    assert pickle.loads(pickle.dumps(spec)).build().version == spec.build().version


# Errors.


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(teachers=()), ValueError, "teachers is empty"),
        (dict(teachers=(SURE, "test/split")), TypeError, r"teachers\[1\] must be a teacher spec"),
        (dict(mode="vote"), ValueError, "mode must be one of"),
        (dict(weights=(1.0,)), ValueError, r"weights must have one weight per teacher \(2\)"),
        (dict(weights=(1.0, -0.5)), ValueError, "weights must be finite and non-negative"),
        (dict(weights=(1.0, math.nan)), ValueError, "weights must be finite and non-negative"),
        (dict(weights=(0.0, 0.0)), ValueError, "weights must have a positive sum"),
        (dict(weights=("a", "b")), ValueError, "weights must be a sequence of 2 numbers"),
        (dict(groups={0: 0}), ValueError, "groups is only used in group mode"),
        (dict(mode="group"), ValueError, "group mode needs groups"),
        (dict(mode="group", groups={0: 0}, weights=(1.0, 1.0)), ValueError, "weights is not used in group mode"),
        (dict(mode="group", groups={"green": 0}, team_names=("red", "blue")), ValueError,
         r"group 'green' not found in team_names \('red', 'blue'\)"),
        (dict(mode="group", groups={"red": 0}), ValueError, "team_names is not set"),
        (dict(mode="group", groups={-1: 0}), ValueError, "keys must be team names"),
        (dict(mode="group", groups={2: 0}, team_names=("red", "blue")), ValueError,
         "team index 2 is out of range"),
        (dict(mode="group", groups={0: 2}), ValueError, "is teacher index 2, but there are 2 teachers"),
        (dict(mode="group", groups={0: (1.0, -1.0)}), ValueError,
         r"groups\[0\] must be finite and non-negative"),
        (dict(mode="group", groups={"red": 0, 0: 1}, team_names=("red", "blue")), ValueError,
         "groups names team 0 twice"),
    ],
)
def test_spec_rejects_invalid_settings(kwargs, error, message):
    kwargs.setdefault("teachers", (SURE, SPLIT))
    with pytest.raises(error, match=message):
        MixtureSpec(**kwargs)


def test_build_rejects_mismatched_num_actions():
    three_actions = FixedSpec((0.5, 0.5, 0.0), teacher_id="test/three")
    with pytest.raises(ValueError, match=r"same num_actions, got test/sure: 4, test/three: 3"):
        MixtureSpec((SURE, three_actions)).build()


def test_build_rejects_conflicting_observation_shapes():
    children = (dataclasses.replace(SURE, observation_shape=(2,)), dataclasses.replace(SPLIT, observation_shape=(3,)))
    with pytest.raises(ValueError, match="expect different observation shapes"):
        MixtureSpec(children).build()


def test_teacher_rejects_children_unlike_spec():
    with pytest.raises(ValueError, match="got 1 children for a spec of 2 teachers"):
        MixtureTeacher([SURE.build()], MixtureSpec((SURE, SPLIT)))


# Real scripted teachers on a real world.


def test_group_mode_on_battle_teams():
    world, battle_obs = battle_world()
    sharp, soft = ScriptedBattleSpec(temperature=0.1), ScriptedBattleSpec(temperature=2.0)
    spec = MixtureSpec((sharp, soft), mode="group", groups={"red": 0, "blue": 1}, team_names=world.team_names)
    rows = np.arange(world.num_agents)
    request = LabelRequest(battle_obs, rows=rows, state=world.state())

    mixed = spec.build().label(request)
    red = world.team_ids == 0
    np.testing.assert_allclose(mixed.probs[red], sharp.build().label(request).probs[red], atol=1e-6)
    np.testing.assert_allclose(mixed.probs[~red], soft.build().label(request).probs[~red], atol=1e-6)
    np.testing.assert_array_equal(mixed.aux["goal"], sharp.build().label(request).aux["goal"])


def test_confidence_mixture_of_scripted_teachers_beats_random():
    sharp, soft = ScriptedBattleSpec(temperature=0.1), ScriptedBattleSpec(temperature=5.0)
    teacher = MixtureSpec((sharp, soft), mode="confidence").build()
    returns = {}
    for arm in ("mixture", "random"):
        world, battle_obs = battle_world(seed=1)
        rng = np.random.default_rng(1)
        red = world.team_ids == 0
        total = 0.0
        while not world.episode_over:
            actions = rng.integers(0, world.num_actions, world.num_agents)
            state = world.state()
            rows = np.flatnonzero(red & state["alive"])
            if arm == "mixture" and rows.size:
                actions[rows] = teacher.label(LabelRequest(battle_obs[rows], rows=rows, state=state)).probs.argmax(1)
            step = world.step(actions)
            battle_obs = step.obs
            total += float(step.reward[red].sum())
        returns[arm] = total
    assert returns["mixture"] > returns["random"] + 20, returns


def test_mixture_of_different_worlds_rejected():
    with pytest.raises(ValueError, match=r"scripted/battle_v4: 21, scripted/pursuit_v5: 5"):
        MixtureSpec((ScriptedBattleSpec(), ScriptedPursuitSpec())).build()


def test_spec_builds_and_labels_in_ray_worker(ray_session):
    spec = MixtureSpec((SURE, SPLIT), mode="confidence")

    @ray_session.remote
    def label_remotely(spec, batch_obs):
        return spec.build().label(LabelRequest(batch_obs)).probs

    remote_probs = ray_session.get(label_remotely.remote(spec, obs(3)))
    np.testing.assert_allclose(remote_probs, spec.build().label(LabelRequest(obs(3))).probs)
