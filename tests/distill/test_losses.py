"""Distillation losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    LossWeights,
    auxiliary_loss,
    behaviour_cloning_loss,
    distillation_loss,
    soft_label_kl_loss,
)


def test_behaviour_cloning_matches_hand_value():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # student probs 1/4, 3/4
    loss = behaviour_cloning_loss(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(4.0))


def test_behaviour_cloning_means_over_any_batch_shape():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # (1, 2, A=2)
    loss = behaviour_cloning_loss(logits, torch.tensor([[1, 0]]))
    expected = (-math.log(0.75) + math.log(2.0)) / 2
    assert loss.item() == pytest.approx(expected)


def test_behaviour_cloning_ignores_masked_actions():
    # Three actions, the third illegal: the student's softmax runs over the first two only.
    logits = torch.tensor([[0.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    loss = behaviour_cloning_loss(logits, torch.tensor([0]), action_mask=mask)
    assert loss.item() == pytest.approx(math.log(2.0))


def test_kl_matches_hand_value_and_direction():
    teacher = torch.tensor([[0.75, 0.25]])
    student_logits = torch.tensor([[0.0, 0.0]])  # uniform
    # KL(teacher || student) = sum p_t log(p_t / p_s).
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    loss = soft_label_kl_loss(student_logits, teacher_probs=teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # The reverse direction, KL(student || teacher), is a different number.
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert loss.item() != pytest.approx(reverse, rel=1e-3)


def test_kl_accepts_log_space_teacher():
    teacher = torch.tensor([[0.75, 0.25]])
    student_logits = torch.tensor([[1.0, -1.0]])
    from_probs = soft_label_kl_loss(student_logits, teacher_probs=teacher)
    from_logs = soft_label_kl_loss(student_logits, teacher_log_probs=teacher.log())
    assert from_logs.item() == pytest.approx(from_probs.item(), rel=1e-6)


def test_kl_temperature_scaling():
    teacher = torch.tensor([[0.8, 0.2]])
    student_logits = torch.tensor([[0.0, 0.0]])
    temperature = 2.0
    # Teacher at T: softmax(log p / T) = sqrt(p) normalised.
    soft = torch.tensor([math.sqrt(0.8), math.sqrt(0.2)])
    soft = soft / soft.sum()
    kl = sum(p * math.log(p / 0.5) for p in soft.tolist())
    loss = soft_label_kl_loss(student_logits, teacher_probs=teacher, temperature=temperature)
    assert loss.item() == pytest.approx(kl * temperature**2, rel=1e-5)


def test_kl_is_zero_when_student_matches_teacher():
    teacher = torch.tensor([[0.1, 0.2, 0.7]])
    loss = soft_label_kl_loss(teacher.log(), teacher_probs=teacher, temperature=3.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_kl_means_over_any_batch_shape():
    teacher = torch.tensor([[0.75, 0.25], [0.5, 0.5]]).reshape(2, 1, 2)
    student_logits = torch.zeros(2, 1, 2)
    first = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = soft_label_kl_loss(student_logits, teacher_probs=teacher)
    assert loss.item() == pytest.approx(first / 2, rel=1e-6)


def test_kl_masked_actions_finite():
    teacher = torch.tensor([[0.5, 0.5, 0.0]])
    student_logits = torch.tensor([[0.0, 0.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = soft_label_kl_loss(student_logits, teacher_probs=teacher, action_mask=mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(student_logits.grad).all()
    assert student_logits.grad[0, 2].item() == 0.0


def test_kl_zero_teacher_mass_finite():
    teacher = torch.tensor([[1.0, 0.0]])
    student_logits = torch.tensor([[0.0, 0.0]])
    loss = soft_label_kl_loss(student_logits, teacher_probs=teacher)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_sample_weights_weight_the_mean():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    actions = torch.tensor([1, 0])
    weights = torch.tensor([3.0, 1.0])
    loss = behaviour_cloning_loss(logits, actions, weights=weights)
    expected = (3 * -math.log(0.75) + math.log(2.0)) / 4
    assert loss.item() == pytest.approx(expected)


def test_auxiliary_loss_sums_target_axes_and_means_samples():
    prediction = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # two samples of 2-d goals
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert auxiliary_loss(prediction, target).item() == pytest.approx((5.0 + 1.0) / 2)


def test_auxiliary_loss_of_scalar_targets():
    assert auxiliary_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(5.0)


def test_weighted_sum_of_terms():
    teacher = torch.tensor([[0.75, 0.25]])
    logits = torch.tensor([[0.0, 0.0]])
    weights = LossWeights(behaviour_cloning=2.0, soft_label=0.5, auxiliary=1.0, temperature=1.0)
    total, terms = distillation_loss(
        logits, teacher, loss_weights=weights,
        student_aux={"value": torch.tensor([1.0])}, teacher_aux={"value": torch.tensor([0.0])},
    )
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expected = 2.0 * math.log(2.0) + 0.5 * kl + 1.0 * 1.0
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert terms["behaviour_cloning"] == pytest.approx(math.log(2.0))
    assert terms["soft_label"] == pytest.approx(kl, rel=1e-6)
    assert terms["auxiliary"] == pytest.approx(1.0)


def test_zero_weight_skips_term():
    _, terms = distillation_loss(
        torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]), loss_weights=LossWeights(soft_label=1.0)
    )
    assert "behaviour_cloning" not in terms
    assert "auxiliary" not in terms


@pytest.mark.parametrize("kwargs, message", [
    ({"soft_label": -1.0}, r"loss weight soft_label must be >= 0, got -1.0"),
    ({"soft_label": 0.0}, r"at least one loss weight must be > 0"),
    ({"temperature": 0.0}, r"temperature must be > 0, got 0.0"),
])
def test_invalid_loss_weights_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossWeights(**kwargs)


def test_kl_needs_exactly_one_teacher_input():
    with pytest.raises(ValueError, match="give exactly one of teacher_probs and teacher_log_probs"):
        soft_label_kl_loss(torch.zeros(1, 2))


def test_auxiliary_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"prediction shape \(2,\) differs from target shape \(3,\)"):
        auxiliary_loss(torch.zeros(2), torch.zeros(3))
