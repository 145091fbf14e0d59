"""Distillation losses: behaviour cloning, soft-label KL at a temperature, auxiliary targets.

All losses take tensors of any batch shape ``(*S, A)`` and return the per-sample mean, a
scalar averaged over every sample of ``*S`` (optionally weighted). Masked (illegal)
actions carry no probability for either side: the student's logits are masked before
its softmax, and teacher probabilities must be zero there.

Shape letters: S the batch shape (any number of axes), A actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F

MASKED_LOGIT = -1e9
"""Logit given to illegal actions: finite, so that 0 * log(p) stays 0 and gradients stay finite."""


def mask_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Return ``logits`` with illegal actions set to ``MASKED_LOGIT``."""
    if action_mask is None:
        return logits
    return logits.masked_fill(~action_mask.bool(), MASKED_LOGIT)


def _sample_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_sample.mean()
    weights = weights.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)


def behaviour_cloning_loss(
    student_logits: torch.Tensor,
    teacher_actions: torch.Tensor,
    *,
    action_mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the student on the teacher's (hard) actions, averaged per sample.

    Args:
        student_logits: (*S, A) raw student outputs.
        teacher_actions: (*S,) integer actions, usually the argmax of the teacher's probabilities.
        action_mask: (*S, A) bool legal actions, or ``None``.
        weights: (*S,) non-negative sample weights, or ``None`` for a plain mean.
    """
    log_probs = F.log_softmax(mask_logits(student_logits, action_mask), dim=-1)
    per_sample = -log_probs.gather(-1, teacher_actions.long().unsqueeze(-1)).squeeze(-1)
    return _sample_mean(per_sample, weights)


def tempered_log_probs(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log of ``softmax(log_probs / T)``: a distribution sharpened (T < 1) or softened (T > 1).

    Zero-probability entries (``-inf`` logs) stay at zero probability.
    """
    return F.log_softmax(log_probs / temperature, dim=-1)


def soft_label_kl_loss(
    student_logits: torch.Tensor,
    *,
    teacher_probs: torch.Tensor | None = None,
    teacher_log_probs: torch.Tensor | None = None,
    temperature: float = 1.0,
    action_mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) at temperature T, scaled by T^2, averaged per sample.

    Both distributions are softened by T: the student's as ``softmax(logits / T)``, the
    teacher's as ``softmax(log p_teacher / T)``. The T^2 factor keeps gradient magnitudes
    comparable across temperatures (Hinton, Vinyals and Dean, 2015, "Distilling the
    Knowledge in a Neural Network", section 2).

    Args:
        student_logits: (*S, A) raw student outputs.
        teacher_probs: (*S, A) teacher probabilities; give this or ``teacher_log_probs``.
        teacher_log_probs: (*S, A) teacher log-probabilities (``-inf`` where zero).
        temperature: T > 0.
        action_mask: (*S, A) bool legal actions, or ``None``.
        weights: (*S,) non-negative sample weights, or ``None`` for a plain mean.

    Raises:
        ValueError: both or neither teacher input is given, or T <= 0.
    """
    if (teacher_probs is None) == (teacher_log_probs is None):
        raise ValueError("give exactly one of teacher_probs and teacher_log_probs")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if teacher_log_probs is None:
        teacher_log_probs = torch.log(teacher_probs)  # log(0) = -inf keeps zeros at zero

    teacher_log_p = tempered_log_probs(teacher_log_probs, temperature)  # (*S, A)
    student_log_p = F.log_softmax(mask_logits(student_logits, action_mask) / temperature, dim=-1)
    teacher_p = teacher_log_p.exp()
    # 0 * log 0 = 0: entries where the teacher has no mass contribute nothing.
    safe_teacher_log_p = torch.where(teacher_p > 0, teacher_log_p, torch.zeros_like(teacher_log_p))
    per_sample = (teacher_p * (safe_teacher_log_p - student_log_p)).sum(dim=-1)
    return _sample_mean(per_sample, weights) * temperature**2


def auxiliary_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    num_sample_dims: int | None = None,
) -> torch.Tensor:
    """Mean squared error between a student's auxiliary head and the teacher's target.

    The squared error is summed over the target's own axes (a 2-d goal offset counts as
    one sample) and averaged over samples. The auxiliary counterpart of distilling a
    reasoning trace: the student learns what the teacher aimed at, not only what it did.

    Args:
        prediction: (*S, *T) student outputs.
        target: (*S, *T) teacher targets, same shape.
        weights: (*S,) non-negative sample weights, or ``None``.
        num_sample_dims: len(S); defaults to ``weights.ndim`` or, without weights, 1.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from target shape {tuple(target.shape)}")
    if num_sample_dims is None:
        num_sample_dims = weights.ndim if weights is not None else 1
    squared = (prediction - target.to(prediction.dtype)) ** 2
    per_sample = squared.reshape(*squared.shape[:num_sample_dims], -1).sum(dim=-1)
    return _sample_mean(per_sample, weights)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the terms of the distillation loss; a zero weight skips the term."""

    behaviour_cloning: float = 0.0
    """Weight of the cross-entropy on the teacher's argmax action."""
    soft_label: float = 1.0
    """Weight of KL(teacher || student) at ``temperature``."""
    auxiliary: float = 0.0
    """Weight of the auxiliary-target MSE, summed over the auxiliary heads."""
    temperature: float = 1.0
    """Softening temperature T of the KL term."""

    def __post_init__(self) -> None:
        for field in ("behaviour_cloning", "soft_label", "auxiliary"):
            value = getattr(self, field)
            if not value >= 0:
                raise ValueError(f"loss weight {field} must be >= 0, got {value}")
        if self.behaviour_cloning == self.soft_label == self.auxiliary == 0:
            raise ValueError("at least one loss weight must be > 0")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    *,
    loss_weights: LossWeights,
    action_mask: torch.Tensor | None = None,
    student_aux: Mapping[str, torch.Tensor] | None = None,
    teacher_aux: Mapping[str, torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the weighted sum of the enabled terms and each term's value.

    Auxiliary heads are matched by name; a head without a teacher target is skipped.
    """
    total = student_logits.new_zeros(())
    terms: dict[str, float] = {}
    if loss_weights.behaviour_cloning > 0:
        teacher_actions = teacher_probs.argmax(dim=-1)
        bc = behaviour_cloning_loss(student_logits, teacher_actions, action_mask=action_mask, weights=weights)
        total = total + loss_weights.behaviour_cloning * bc
        terms["behaviour_cloning"] = float(bc.detach())
    if loss_weights.soft_label > 0:
        kl = soft_label_kl_loss(
            student_logits, teacher_probs=teacher_probs, temperature=loss_weights.temperature,
            action_mask=action_mask, weights=weights,
        )
        total = total + loss_weights.soft_label * kl
        terms["soft_label"] = float(kl.detach())
    if loss_weights.auxiliary > 0 and student_aux and teacher_aux:
        sample_dims = student_logits.ndim - 1
        aux_total = student_logits.new_zeros(())
        for name, prediction in student_aux.items():
            if name in teacher_aux:
                aux_total = aux_total + auxiliary_loss(
                    prediction, teacher_aux[name], weights=weights, num_sample_dims=sample_dims
                )
        total = total + loss_weights.auxiliary * aux_total
        terms["auxiliary"] = float(aux_total.detach())
    terms["total"] = float(total.detach())
    return total, terms
