"""The Teacher base class: request validation, probability validation and cost accounting."""

from __future__ import annotations

import numpy as np
import pytest

from policies.teacher import (
    LabelError,
    LabelInputError,
    LabelRequest,
    Teacher,
    softmax,
)


class ConstantTeacher(Teacher):
    """Returns the same probability row for every state."""

    teacher_id = "test/constant"
    version = "1"
    num_actions = 3
    observation_shape = (2,)
    aux_shapes = {"value": ()}

    def __init__(self, row, *, value=0.0):
        super().__init__()
        self.row = np.asarray(row, dtype=np.float32)
        self.value = value

    def _label(self, request):
        probs = np.tile(self.row, (request.size, 1))
        return probs, {"value": np.full(request.size, self.value, dtype=np.float32)}


class PrivilegedTeacher(ConstantTeacher):
    teacher_id = "test/privileged"
    requires_state = True


def obs(batch: int) -> np.ndarray:
    return np.zeros((batch, 2), dtype=np.float32)


def test_label_returns_probs_aux_and_identity():
    labels = ConstantTeacher([0.2, 0.3, 0.5], value=1.5).label(LabelRequest(obs(4)))
    assert labels.probs.shape == (4, 3)
    assert labels.probs.dtype == np.float32
    np.testing.assert_allclose(labels.aux["value"], 1.5)
    assert labels.teacher_id == "test/constant"
    assert labels.teacher_version == "1"


def test_label_many_keeps_request_order():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    results = teacher.label_many([LabelRequest(obs(2)), LabelRequest(obs(5))])
    assert [labels.size for labels in results] == [2, 5]


def test_cost_counts_labels_and_time():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    assert teacher.cost().us_per_label is None
    teacher.label(LabelRequest(obs(10)))
    cost = teacher.cost()
    assert cost.labels == 10
    assert cost.us_per_label > 0
    teacher.reset_cost()
    assert teacher.cost().labels == 0


def test_describe_is_plain_data():
    described = ConstantTeacher([1.0, 0.0, 0.0]).describe()
    assert described["teacher_id"] == "test/constant"
    assert described["aux"] == {"value": []}


def test_empty_batch_is_fine():
    labels = ConstantTeacher([1.0, 0.0, 0.0]).label(LabelRequest(obs(0)))
    assert labels.probs.shape == (0, 3)


# Malformed requests.


def test_wrong_observation_shape_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    with pytest.raises(LabelInputError, match=r"obs must have shape \(B, 2\), got \(4, 3\)"):
        teacher.label(LabelRequest(np.zeros((4, 3), dtype=np.float32)))


def test_wrong_observation_dtype_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    with pytest.raises(LabelInputError, match=r"obs must be float32, got float64; convert with"):
        teacher.label(LabelRequest(np.zeros((4, 2))))


def test_observation_that_is_not_an_array_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    with pytest.raises(LabelInputError, match=r"obs must be a numpy array, got list"):
        teacher.label(LabelRequest([[0.0, 0.0]]))


def test_mask_of_wrong_shape_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    with pytest.raises(LabelInputError, match=r"action_mask must be a bool array of shape \(4, 3\)"):
        teacher.label(LabelRequest(obs(4), action_mask=np.ones((4, 2), dtype=bool)))


def test_mask_row_without_legal_action_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0])
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    with pytest.raises(LabelInputError, match=r"action_mask row 1 allows no action"):
        teacher.label(LabelRequest(obs(3), action_mask=mask))


def test_privileged_teacher_needs_state():
    teacher = PrivilegedTeacher([1.0, 0.0, 0.0])
    with pytest.raises(LabelInputError, match=r"privileged teacher: the request needs rows and state"):
        teacher.label(LabelRequest(obs(2)))


def test_privileged_teacher_checks_rows():
    teacher = PrivilegedTeacher([1.0, 0.0, 0.0])
    request = LabelRequest(obs(2), rows=np.array([0.5, 1.0]), state={})
    with pytest.raises(LabelInputError, match=r"rows must be an integer array of shape \(2,\)"):
        teacher.label(request)


# Invalid probabilities are never passed on.


@pytest.mark.parametrize("row, message", [
    ([0.5, np.nan, 0.5], r"row 0 contain NaN or inf"),
    ([0.5, np.inf, 0.5], r"row 0 contain NaN or inf"),
    ([1.5, -0.5, 0.0], r"row 0 are negative"),
    ([0.5, 0.2, 0.2], r"row 0 sum to 0.900000, not 1"),
])
def test_invalid_probabilities_raise(row, message):
    teacher = ConstantTeacher(row)
    with pytest.raises(LabelError, match=message):
        teacher.label(LabelRequest(obs(2)))


def test_probability_on_illegal_action_raises():
    teacher = ConstantTeacher([0.5, 0.5, 0.0])
    mask = np.array([[True, False, True]])
    with pytest.raises(LabelError, match=r"row 0 puts probability on illegal actions"):
        teacher.label(LabelRequest(obs(1), action_mask=mask))


def test_probabilities_of_wrong_width_raise():
    class WideTeacher(ConstantTeacher):
        num_actions = 4

    with pytest.raises(LabelError, match=r"probabilities must have shape \(2, 4\), got \(2, 3\)"):
        WideTeacher([1.0, 0.0, 0.0]).label(LabelRequest(obs(2)))


def test_non_finite_aux_target_raises():
    teacher = ConstantTeacher([1.0, 0.0, 0.0], value=float("nan"))
    with pytest.raises(LabelError, match=r"auxiliary target 'value' contains NaN or inf"):
        teacher.label(LabelRequest(obs(2)))


def test_missing_aux_target_raises():
    class SilentTeacher(ConstantTeacher):
        def _label(self, request):
            return np.tile(self.row, (request.size, 1)), {}

    with pytest.raises(LabelError, match=r"auxiliary target 'value' is missing"):
        SilentTeacher([1.0, 0.0, 0.0]).label(LabelRequest(obs(2)))


def test_softmax_masks_and_scales():
    values = np.array([[1.0, 2.0, 3.0]])
    probs = softmax(values, temperature=1.0, mask=np.array([[True, True, False]]))
    np.testing.assert_allclose(probs, [[1 / (1 + np.e), np.e / (1 + np.e), 0.0]], rtol=1e-6)
    cold = softmax(values, temperature=0.01)
    np.testing.assert_allclose(cold, [[0.0, 0.0, 1.0]], atol=1e-6)
