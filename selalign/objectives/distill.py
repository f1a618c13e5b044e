"""Knowledge distillation from a teacher on the chosen responses: forward KL (Hinton et al. 2015) and the
skew KL of DistiLLM (Ko et al. 2024), each mixed with the chosen NLL.

Divergences are taken per response token over the full vocabulary, in float32, from next-token logits:
the distribution of the token at position t is ``logits[:, t - 1]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, masked_mean
from selalign.objectives.sft import chosen_nll


def response_log_probs(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, response_mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / temperature) of teacher and student at the N response tokens, in float32.

    Args:
        teacher_logits, student_logits: [B, T, V] next-token logits of the same rows.
        response_mask: bool [B, T], True on response tokens (never at t = 0).
        temperature: tau > 0, divides both logits.

    Returns:
        (log p_T, log q_theta), [N, V] each, rows in the order of the True positions of ``response_mask``.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} differ; "
            "slice both to the tokenizer's vocabulary before distilling"
        )
    predicting = response_mask[:, 1:].bool()
    teacher = (teacher_logits[:, :-1][predicting].float() / temperature).log_softmax(dim=-1)
    student = (student_logits[:, :-1][predicting].float() / temperature).log_softmax(dim=-1)
    return teacher, student


def _at_response_positions(per_token: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Values [N] of the response tokens laid out as [B, T], 0 elsewhere (the inverse of the selection above)."""
    positions = F.pad(response_mask[:, 1:].bool(), (1, 0))
    return per_token.new_zeros(positions.shape).masked_scatter(positions, per_token)


def _kl_terms(teacher_logp: torch.Tensor, other_logp: torch.Tensor) -> torch.Tensor:
    """sum_v p_T(v) (log p_T(v) - log r(v)) per row, [N, V] -> [N]; vocabulary entries with p_T = 0 add 0."""
    return torch.where(teacher_logp.isneginf(), 0.0, teacher_logp.exp() * (teacher_logp - other_logp)).sum(dim=-1)


def forward_kl_per_token(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, response_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Forward KL from teacher to student at every response token, full vocabulary, float32.

    Args:
        teacher_logits, student_logits: [B, T, V] next-token logits of the same rows (equal V).
        response_mask: bool [B, T], True on response tokens.
        temperature: tau > 0; both distributions are taken at logits / tau.

    Returns:
        [B, T], at a response token t: tau^2 * sum_v p_T(v) (log p_T(v) - log q_theta(v)), with
        p_T = softmax(teacher_logits[:, t - 1] / tau), q_theta = softmax(student_logits[:, t - 1] / tau);
        0 at every other position. The tau^2 factor keeps the gradient's scale independent of tau
        (Hinton et al. 2015), so a temperature change does not silently rescale the term's weight.
    """
    teacher_logp, student_logp = response_log_probs(teacher_logits, student_logits, response_mask, temperature)
    return _at_response_positions(temperature**2 * _kl_terms(teacher_logp, student_logp), response_mask)


def skew_kl_per_token(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, response_mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """DistiLLM's skew KL at every response token, full vocabulary, float32.

    Args:
        teacher_logits, student_logits: [B, T, V] next-token logits of the same rows (equal V).
        response_mask: bool [B, T], True on response tokens.
        alpha: skew in [0, 1]; 0 gives the forward KL, 1 gives 0.

    Returns:
        [B, T], at a response token t: KL(p_T || m) = sum_v p_T(v) (log p_T(v) - log m(v)) with the mixture
        m = alpha p_T + (1 - alpha) q_theta, taken in log space as
        log m = logsumexp(log alpha + log p_T, log(1 - alpha) + log q_theta); 0 at every other position.
    """
    teacher_logp, student_logp = response_log_probs(teacher_logits, student_logits, response_mask)
    log_alpha = math.log(alpha) if alpha > 0 else -math.inf
    log_one_minus_alpha = math.log1p(-alpha) if alpha < 1 else -math.inf
    mixture_logp = torch.logaddexp(teacher_logp + log_alpha, student_logp + log_one_minus_alpha)
    return _at_response_positions(_kl_terms(teacher_logp, mixture_logp), response_mask)


def _mix_with_nll(
    token_divergence: torch.Tensor, policy_chosen_tok: torch.Tensor, chosen_mask: torch.Tensor, kd_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kd_ratio * D_b + (1 - kd_ratio) * NLL_b, D_b, NLL_b), D_b the token mean of ``token_divergence`` [B, T]."""
    divergence = masked_mean(token_divergence, chosen_mask)
    nll = chosen_nll(policy_chosen_tok, chosen_mask)
    return kd_ratio * divergence + (1 - kd_ratio) * nll, divergence, nll


def distill_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    policy_chosen_tok: torch.Tensor,
    chosen_mask: torch.Tensor,
    kd_ratio: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-KL distillation mixed with the chosen NLL.

    Args:
        student_logits: [B, T, V] policy logits of the chosen rows (with gradient).
        teacher_logits: [B, T, V] teacher logits of the same rows.
        policy_chosen_tok: [B, T] per-token log pi_theta of the chosen responses.
        chosen_mask: bool [B, T], True on response tokens.
        kd_ratio: weight of the KL in [0, 1]; the NLL gets 1 - kd_ratio.
        temperature: tau of ``forward_kl_per_token`` (the KL is scaled by tau^2; the NLL is at tau = 1).

    Returns:
        losses [B] = kd_ratio * KL_b + (1 - kd_ratio) * NLL_b, KL_b [B], NLL_b [B], where
        KL_b = (1 / |y_b|) sum_{t in y_b} tau^2 KL(p_T(. | y_<t) || q_theta(. | y_<t)) and NLL_b = ``chosen_nll``.
    """
    token_kl = forward_kl_per_token(teacher_logits, student_logits, chosen_mask, temperature)
    return _mix_with_nll(token_kl, policy_chosen_tok, chosen_mask, kd_ratio)


def distill_skl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    policy_chosen_tok: torch.Tensor,
    chosen_mask: torch.Tensor,
    kd_ratio: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Skew-KL distillation (DistiLLM) mixed with the chosen NLL.

    Args:
        student_logits: [B, T, V] policy logits of the chosen rows (with gradient).
        teacher_logits: [B, T, V] teacher logits of the same rows.
        policy_chosen_tok: [B, T] per-token log pi_theta of the chosen responses.
        chosen_mask: bool [B, T], True on response tokens.
        kd_ratio: weight of the skew KL in [0, 1]; the NLL gets 1 - kd_ratio.
        alpha: skew in [0, 1] of ``skew_kl_per_token``.

    Returns:
        losses [B] = kd_ratio * SKL_b + (1 - kd_ratio) * NLL_b, SKL_b [B], NLL_b [B], where
        SKL_b = (1 / |y_b|) sum_{t in y_b} KL(p_T || alpha p_T + (1 - alpha) q_theta) and NLL_b = ``chosen_nll``.
    """
    token_skew_kl = skew_kl_per_token(teacher_logits, student_logits, chosen_mask, alpha)
    return _mix_with_nll(token_skew_kl, policy_chosen_tok, chosen_mask, kd_ratio)


class _Distillation(Objective):
    """kd_ratio * divergence + (1 - kd_ratio) * NLL on the chosen rows; subclasses name the divergence."""

    needs_reference = False
    needs_teacher = True
    divergence_metric: str

    def __init__(self, kd_ratio: float):
        if not 0.0 <= kd_ratio <= 1.0:
            raise ValueError(f"method.kd_ratio must be in [0, 1], got {kd_ratio}")
        self.kd_ratio = kd_ratio

    def pair_losses(self, student_logits, teacher_logits, policy_chosen_tok, chosen_mask):
        """(losses [B], divergence [B], nll [B]) from the chosen rows' tensors."""
        raise NotImplementedError

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        losses, divergence, nll = self.pair_losses(
            inputs.chosen(inputs.policy_logits), inputs.teacher_logits,
            inputs.chosen(inputs.policy_logps), inputs.chosen(inputs.response_mask),
        )
        loss = losses.mean()
        metrics = {"loss": loss.detach(), self.divergence_metric: divergence.detach().mean(), "nll/chosen": nll.detach().mean()}
        return ObjectiveOutput(loss, losses, metrics)


class DistillKD(_Distillation):
    """Forward-KL distillation from the teacher on the chosen responses, mixed with their NLL."""

    divergence_metric = "distill/kl"

    def __init__(self, kd_ratio: float = 0.5, temperature: float = 1.0):
        super().__init__(kd_ratio)
        if temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def pair_losses(self, student_logits, teacher_logits, policy_chosen_tok, chosen_mask):
        return distill_kd_loss(student_logits, teacher_logits, policy_chosen_tok, chosen_mask, self.kd_ratio, self.temperature)


class DistillSKL(_Distillation):
    """DistiLLM's skew-KL distillation on the chosen responses, mixed with their NLL."""

    divergence_metric = "distill/skew_kl"

    def __init__(self, kd_ratio: float = 0.5, alpha: float = 0.1):
        super().__init__(kd_ratio)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def pair_losses(self, student_logits, teacher_logits, policy_chosen_tok, chosen_mask):
        return distill_skl_loss(student_logits, teacher_logits, policy_chosen_tok, chosen_mask, self.kd_ratio, self.alpha)
