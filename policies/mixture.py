"""A teacher that mixes the action probabilities of several teachers.

Three modes decide each child's weight ``w[b, t]`` for state b and child t. The label is
``sum_t w[b, t] * probs_t[b]``, and the weights of each state sum to one:

- ``"fixed"``: the same weights for every state (``MixtureSpec.weights``, equal by default).
- ``"group"``: weights chosen by the agent's team, ``state["team_ids"][rows]``, from
  ``MixtureSpec.groups``, which maps a team name or team index to one child's index or
  to a weight per child. This gives, say, the red team one teacher and blue another.
- ``"confidence"``: ``w[b, t]`` proportional to ``weights[t] * exp(-H(probs_t[b]))``,
  where H is the entropy in nats. ``exp(-H)`` is the inverse perplexity of a label: 1
  when the child is sure of one action, ``1 / A`` when it is uniform over A actions, so
  sure children outweigh unsure ones state by state.

A child whose weight is zero for a state does not label it, so in group mode each
child labels only its own teams' states. Auxiliary targets that every child returns with
the same shape are kept, and targets that some children lack are dropped. Each state
takes its targets from its highest-weight child (the lowest index on ties), because
averaging values such as goal cells would give a point that no teacher chose.

Shape letters: B states in a request, T child teachers, A actions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from policies.teacher import LabelInputError, LabelRequest, Teacher, TeacherSpec

logger = logging.getLogger(__name__)

MIXTURE_MODES = ("fixed", "group", "confidence")

MixtureMode = Literal["fixed", "group", "confidence"]

MIXTURE_RULES_VERSION = "1"
"""Version of the mixing rules; part of every mixture's ``version``."""


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """Builds a ``MixtureTeacher`` from its children's specs.

    Example:
        >>> from policies.scripted import ScriptedBattleSpec
        >>> spec = MixtureSpec(
        ...     teachers=(ScriptedBattleSpec(temperature=0.1), ScriptedBattleSpec(temperature=1.0)),
        ...     mode="group",
        ...     groups={"red": 0, "blue": (0.5, 0.5)},
        ...     team_names=("red", "blue"),
        ... )
        >>> spec.build().teacher_id
        'mixture(scripted/battle_v4,scripted/battle_v4)'
    """

    teachers: tuple[TeacherSpec, ...]
    """Specs of the child teachers; all must build teachers with the same ``num_actions``."""
    mode: MixtureMode = "fixed"
    """Rule that sets the child weights of each state: ``"fixed"``, ``"group"`` or ``"confidence"``."""
    weights: tuple[float, ...] | None = None
    """One non-negative weight per child, normalised to sum to one: the mixing weights in
    fixed mode, the prior weights in confidence mode. ``None`` gives equal weights. Not
    used in group mode."""
    groups: Mapping[str | int, int | Sequence[float]] | None = None
    """Group mode only: team name or team index to a child's index or to one weight per child."""
    team_names: tuple[str, ...] | None = None
    """The world's ``team_names``, needed to resolve team names in ``groups``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "teachers", tuple(self.teachers))
        if not self.teachers:
            raise ValueError("MixtureSpec: teachers is empty; pass at least one teacher spec")
        for index, spec in enumerate(self.teachers):
            if not callable(getattr(spec, "build", None)):
                raise TypeError(
                    f"MixtureSpec: teachers[{index}] must be a teacher spec with a build() method, "
                    f"got {type(spec).__name__}"
                )
        if self.mode not in MIXTURE_MODES:
            raise ValueError(f"MixtureSpec: mode must be one of {MIXTURE_MODES}, got {self.mode!r}")
        if self.team_names is not None:
            object.__setattr__(self, "team_names", tuple(self.team_names))

        if self.mode == "group":
            if self.weights is not None:
                raise ValueError(
                    "MixtureSpec: weights is not used in group mode; put per-team weights in groups"
                )
            self.group_weights()  # validates groups
            # A copy, so that later changes to the caller's mapping do not change the spec.
            object.__setattr__(self, "groups", dict(self.groups))
        else:
            if self.groups is not None:
                raise ValueError(
                    f"MixtureSpec: groups is only used in group mode, but mode is {self.mode!r}; "
                    "drop groups or set mode='group'"
                )
            self.child_weights()  # validates weights
            if self.weights is not None:
                object.__setattr__(self, "weights", tuple(float(weight) for weight in self.weights))

    def child_weights(self) -> np.ndarray:
        """Return the (T,) normalised weights of fixed and confidence mode."""
        if self.weights is None:
            return np.full(len(self.teachers), 1.0 / len(self.teachers))
        return _normalised(self.weights, len(self.teachers), "weights")

    def group_weights(self) -> dict[int, np.ndarray]:
        """Return team index to (T,) normalised weights, resolved from ``groups``.

        Raises:
            ValueError: ``groups`` is missing or empty, names a team that ``team_names``
                lacks, names one team twice, or has an invalid child index or weights.
        """
        if not self.groups:
            raise ValueError(
                "MixtureSpec: group mode needs groups, a mapping from team name or team index "
                "to a teacher index or weights, such as groups={'red': 0, 'blue': 1}"
            )
        table: dict[int, np.ndarray] = {}
        for key, value in self.groups.items():
            team = self._team_index(key)
            if team in table:
                raise ValueError(f"MixtureSpec: groups names team {team} twice (last as {key!r})")
            table[team] = self._group_value(key, value)
        return table

    def build(self) -> MixtureTeacher:
        """Build the children, then the mixture."""
        return MixtureTeacher([spec.build() for spec in self.teachers], self)

    def _team_index(self, key: Any) -> int:
        if isinstance(key, str):
            if self.team_names is None:
                raise ValueError(
                    f"MixtureSpec: groups names team {key!r}, but team_names is not set; pass "
                    "team_names=world.team_names, or use team indices as keys"
                )
            if key not in self.team_names:
                raise ValueError(
                    f"MixtureSpec: group {key!r} not found in team_names {self.team_names}"
                )
            return self.team_names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            if self.team_names is not None and key >= len(self.team_names):
                raise ValueError(
                    f"MixtureSpec: group team index {key} is out of range for team_names {self.team_names}"
                )
            return int(key)
        raise ValueError(
            f"MixtureSpec: groups keys must be team names (str) or team indices (int >= 0), got {key!r}"
        )

    def _group_value(self, key: Any, value: Any) -> np.ndarray:
        count = len(self.teachers)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= value < count:
                raise ValueError(
                    f"MixtureSpec: groups[{key!r}] is teacher index {value}, but there are {count} "
                    f"teachers; use an index in [0, {count})"
                )
            one_hot = np.zeros(count)
            one_hot[value] = 1.0
            return one_hot
        return _normalised(value, count, f"groups[{key!r}]")


class MixtureTeacher(Teacher):
    """Labels with a per-state weighted mixture of its children's probabilities.

    Identity: ``teacher_id`` is ``mixture(<child ids>)`` and ``version`` is the mixing
    rules' version plus a digest of the mode, the weights and the children's ids and
    versions, so it changes whenever a child's version or a weight changes.

    Cost: ``cost().us_per_label`` is the mixture's own measured time, which contains
    its children's labelling plus the mixing. ``flops_per_label`` is the sum of the
    children's (``None`` if any child's is unknown). In group mode a child labels only
    its teams' states, so that sum is an upper bound. ``param_count`` is the sum of the
    children's parameters, ``None`` when no child is a network. ``describe()`` lists
    every child with its own cost.
    """

    def __init__(self, children: Sequence[Teacher], spec: MixtureSpec) -> None:
        super().__init__()
        self.children = tuple(children)
        self.spec = spec
        _check_children(self.children, len(spec.teachers))

        self.num_actions = self.children[0].num_actions
        self.observation_shape = _common_observation_shape(self.children)
        self.requires_state = spec.mode == "group" or any(child.requires_state for child in self.children)
        self.aux_shapes = _common_aux_shapes(self.children)
        self.teacher_id = f"mixture({','.join(child.teacher_id for child in self.children)})"
        self.version = self._version()

        self._weights = spec.child_weights() if spec.mode != "group" else None  # (T,)
        self._group_table = spec.group_weights() if spec.mode == "group" else None

    # Public API.

    def flops_per_label(self) -> float | None:
        """Return the sum of the children's floating-point operations per label, if all are known."""
        flops = [child.flops_per_label() for child in self.children]
        return None if any(value is None for value in flops) else float(sum(flops))

    def param_count(self) -> int | None:
        """Return the sum of the children's parameters, ``None`` when no child has any."""
        params = [child.param_count() for child in self.children]
        known = [value for value in params if value is not None]
        return int(sum(known)) if known else None

    def describe(self) -> dict[str, Any]:
        """Return identity and cost as plain data, with the mode and every child's description."""
        return {
            **super().describe(),
            "mode": self.spec.mode,
            "children": [child.describe() for child in self.children],
        }

    # Labelling.

    def _label(self, request: LabelRequest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._label_many([request])[0]

    def _label_many(
        self, requests: list[LabelRequest]
    ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        weights = [self._weights_before_labelling(request) for request in requests]  # each (B, T)
        child_labels = self._label_by_children(requests, weights)  # [t][r]: (probs (B, A), aux), or None

        results = []
        for r, request in enumerate(requests):
            row_weights = weights[r]
            if self.spec.mode == "confidence":
                row_weights = _confidence_weights(row_weights, [labels[r][0] for labels in child_labels])
            probs = np.zeros((request.size, self.num_actions), dtype=np.float64)  # (B, A)
            for t, labels in enumerate(child_labels):
                if labels[r] is not None:
                    probs += row_weights[:, t, None] * labels[r][0]
            probs /= np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
            aux = self._dominant_aux(row_weights, [labels[r] for labels in child_labels], request.size)
            results.append((probs.astype(np.float32), aux))
        return results

    def _weights_before_labelling(self, request: LabelRequest) -> np.ndarray:
        """Return (B, T) weights known before the children label: fixed, prior or by team."""
        if self._group_table is None:
            return np.broadcast_to(self._weights, (request.size, len(self.children)))
        if "team_ids" not in request.state:
            raise LabelInputError(
                f"{self.teacher_id}: group mode reads state['team_ids'], but the state has only "
                f"{sorted(request.state)}"
            )
        team_ids = np.asarray(request.state["team_ids"])  # (N,)
        rows = np.asarray(request.rows)  # (B,)
        if rows.size and (rows.min() < 0 or rows.max() >= team_ids.size):
            bad = int(rows[(rows < 0) | (rows >= team_ids.size)][0])
            raise LabelInputError(
                f"{self.teacher_id}: row {bad} is out of range for state['team_ids'] of "
                f"{team_ids.size} agents; rows must lie in [0, {team_ids.size})"
            )
        teams = team_ids[rows].astype(np.int64)  # (B,)

        # Look teams up in a table with a NaN row for every team that groups does not cover.
        size = max(max(self._group_table) + 1, int(teams.max(initial=0)) + 1)
        table = np.full((size, len(self.children)), np.nan)  # (teams, T)
        for team, team_weights in self._group_table.items():
            table[team] = team_weights
        weights = table[teams]  # (B, T)
        uncovered = np.isnan(weights[:, 0])
        if uncovered.any():
            b = int(np.flatnonzero(uncovered)[0])
            raise LabelInputError(
                f"{self.teacher_id}: row {int(rows[b])} is in team {int(teams[b])}, which "
                f"groups does not cover (teams {sorted(self._group_table)}); add it to MixtureSpec.groups"
            )
        return weights

    def _label_by_children(
        self, requests: list[LabelRequest], weights: list[np.ndarray]
    ) -> list[list[tuple[np.ndarray, Mapping[str, np.ndarray]] | None]]:
        """Return, per child and request, its labels scattered to (B, A), or ``None`` if not requested.

        Each child gets one ``label_many`` call with the states whose weight is positive.
        """
        labels_by_child: list[list[tuple[np.ndarray, Mapping[str, np.ndarray]] | None]] = []
        for t, child in enumerate(self.children):
            selections = [np.flatnonzero(row_weights[:, t] > 0) for row_weights in weights]
            requested = [r for r, chosen in enumerate(selections) if chosen.size]
            sub_requests = [_select(requests[r], selections[r]) for r in requested]
            labels = child.label_many(sub_requests) if sub_requests else []

            per_request: list[tuple[np.ndarray, Mapping[str, np.ndarray]] | None] = [None] * len(requests)
            for r, child_labels in zip(requested, labels, strict=True):
                chosen = selections[r]
                probs = np.zeros((requests[r].size, self.num_actions), dtype=np.float64)  # (B, A)
                probs[chosen] = child_labels.probs
                aux = {}
                for name, shape in self.aux_shapes.items():
                    aux[name] = np.zeros((requests[r].size, *shape), dtype=np.float32)
                    aux[name][chosen] = child_labels.aux[name]
                per_request[r] = (probs, aux)
            labels_by_child.append(per_request)
        return labels_by_child

    def _dominant_aux(
        self,
        weights: np.ndarray,
        labels: list[tuple[np.ndarray, Mapping[str, np.ndarray]] | None],
        batch: int,
    ) -> dict[str, np.ndarray]:
        """Return each auxiliary target taken, state by state, from the highest-weight child."""
        if not self.aux_shapes:
            return {}
        dominant = np.asarray(weights).argmax(axis=1)  # (B,)
        aux = {}
        for name, shape in self.aux_shapes.items():
            values = np.zeros((batch, *shape), dtype=np.float32)
            for t, child_labels in enumerate(labels):
                chosen = dominant == t
                if child_labels is not None and chosen.any():
                    values[chosen] = child_labels[1][name][chosen]
            aux[name] = values
        return aux

    def _version(self) -> str:
        description = {
            "mode": self.spec.mode,
            "weights": None if self.spec.mode == "group" else self.spec.child_weights().round(9).tolist(),
            "groups": None
            if self.spec.mode != "group"
            else sorted((team, w.round(9).tolist()) for team, w in self.spec.group_weights().items()),
            "children": [[child.teacher_id, child.version] for child in self.children],
        }
        digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        return f"{MIXTURE_RULES_VERSION}-{digest[:12]}"


def _normalised(weights: Any, count: int, name: str) -> np.ndarray:
    """Return ``weights`` as a (count,) float64 array summing to one, or raise ``ValueError``."""
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"MixtureSpec: {name} must be a sequence of {count} numbers, got {weights!r}") from None
    if values.shape != (count,):
        raise ValueError(
            f"MixtureSpec: {name} must have one weight per teacher ({count}), got {weights!r}"
        )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"MixtureSpec: {name} must be finite and non-negative, got {weights!r}")
    total = values.sum()
    if total <= 0:
        raise ValueError(f"MixtureSpec: {name} must have a positive sum, got {weights!r}")
    return values / total


def _check_children(children: tuple[Teacher, ...], expected: int) -> None:
    if not children:
        raise ValueError("MixtureTeacher: children is empty; pass at least one teacher")
    if len(children) != expected:
        raise ValueError(
            f"MixtureTeacher: got {len(children)} children for a spec of {expected} teachers"
        )
    sizes = {child.num_actions for child in children}
    if len(sizes) > 1:
        listing = ", ".join(f"{child.teacher_id}: {child.num_actions}" for child in children)
        raise ValueError(
            f"MixtureTeacher: all teachers must have the same num_actions, got {listing}; "
            "mix only teachers of one world"
        )


def _common_observation_shape(children: tuple[Teacher, ...]) -> tuple[int, ...] | None:
    shapes = {tuple(child.observation_shape) for child in children if child.observation_shape is not None}
    if len(shapes) > 1:
        listing = ", ".join(f"{child.teacher_id}: {child.observation_shape}" for child in children)
        raise ValueError(
            f"MixtureTeacher: the teachers expect different observation shapes ({listing}); "
            "mix only teachers of one world"
        )
    return shapes.pop() if shapes else None


def _common_aux_shapes(children: tuple[Teacher, ...]) -> dict[str, tuple[int, ...]]:
    common = {}
    for name, shape in children[0].aux_shapes.items():
        shapes = [child.aux_shapes.get(name) for child in children]
        if all(other is not None and tuple(other) == tuple(shape) for other in shapes):
            common[name] = tuple(shape)
        else:
            logger.debug("mixture drops auxiliary target %r: not every child returns it with shape %s", name, shape)
    return common


def _select(request: LabelRequest, chosen: np.ndarray) -> LabelRequest:
    """Return the sub-request of the states ``chosen``, or ``request`` itself if it is all of them."""
    if chosen.size == request.size:
        return request
    return LabelRequest(
        obs=request.obs[chosen],
        rows=None if request.rows is None else np.asarray(request.rows)[chosen],
        state=request.state,
        action_mask=None if request.action_mask is None else request.action_mask[chosen],
    )


def _confidence_weights(prior: np.ndarray, child_probs: list[np.ndarray | None]) -> np.ndarray:
    """Return (B, T) weights proportional to ``prior * exp(-entropy)`` of each child's label."""
    weights = np.array(prior, dtype=np.float64)  # (B, T)
    for t, probs in enumerate(child_probs):
        if probs is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)  # (B,)
        weights[:, t] *= np.exp(-entropy)
    return weights / weights.sum(axis=1, keepdims=True)

