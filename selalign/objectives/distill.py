"""Knowledge distillation from a teacher on the chosen responses: forward KL (Hinton et al. 2015) and the
skew KL of DistiLLM (Ko et al. 2024), each mixed with the chosen NLL.

Divergences are taken per response token over the full vocabulary, in float32, from the next-token distributions
of teacher and policy (``ObjectiveInputs.distributions``; ``selalign.logprobs.token_kl`` on logits).
"""

from __future__ import annotations

import torch

from selalign.logprobs import token_kl
from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_mean
from selalign.objectives.sft import chosen_nll


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
    return temperature**2 * token_kl(teacher_logits, student_logits, response_mask, temperature)


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
    return token_kl(teacher_logits, student_logits, response_mask, skew=alpha)


def distill_loss(
    token_divergence: torch.Tensor, policy_chosen_tok: torch.Tensor, chosen_mask: torch.Tensor, kd_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A per-token divergence from the teacher mixed with the chosen NLL.

    Args:
        token_divergence: [B, T] divergence of the policy from the teacher at each chosen response token
            (``forward_kl_per_token`` or ``skew_kl_per_token``; 0 elsewhere), with gradient.
        policy_chosen_tok: [B, T] per-token log pi_theta of the chosen responses.
        chosen_mask: bool [B, T], True on response tokens.
        kd_ratio: weight of the divergence in [0, 1]; the NLL gets 1 - kd_ratio.

    Returns:
        losses [B] = kd_ratio * D_b + (1 - kd_ratio) * NLL_b, D_b [B], NLL_b [B], where
        D_b = (1 / |y_b|) sum_{t in y_b} token_divergence[b, t] and NLL_b = ``chosen_nll``.
    """
    divergence = masked_mean(token_divergence, chosen_mask)
    nll = chosen_nll(policy_chosen_tok, chosen_mask)
    return kd_ratio * divergence + (1 - kd_ratio) * nll, divergence, nll


class _Distillation(Objective):
    """kd_ratio * divergence + (1 - kd_ratio) * NLL on the chosen rows; subclasses name the divergence."""

    needs_reference = False
    distributions = {"policy": "chosen", "teacher": "chosen"}
    divergence_metric: str

    def __init__(self, kd_ratio: float):
        self.kd_ratio = check_number("method.kd_ratio", kd_ratio, low=0, high=1, low_open=False)

    def token_divergence(self, inputs: ObjectiveInputs) -> torch.Tensor:
        """[B, T] divergence of the policy from the teacher at each chosen response token."""
        raise NotImplementedError

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        losses, divergence, nll = distill_loss(
            self.token_divergence(inputs), inputs.chosen(inputs.policy_logps), inputs.chosen(inputs.response_mask), self.kd_ratio
        )
        loss = losses.mean()
        metrics = {"loss": loss.detach(), self.divergence_metric: divergence.detach().mean(), "nll/chosen": nll.detach().mean()}
        return ObjectiveOutput(loss, losses, metrics)


class DistillKD(_Distillation):
    """Forward-KL distillation from the teacher on the chosen responses, mixed with their NLL."""

    name = "distill_kd"

    divergence_metric = "distill/kl"

    def __init__(self, kd_ratio: float = 0.5, temperature: float = 1.0):
        super().__init__(kd_ratio)
        self.temperature = check_number("method.temperature", temperature, low=0)

    def token_divergence(self, inputs: ObjectiveInputs) -> torch.Tensor:
        return self.temperature**2 * inputs.distributions.kl("teacher", "policy", rows="chosen", temperature=self.temperature)


class DistillSKL(_Distillation):
    """DistiLLM's skew-KL distillation on the chosen responses, mixed with their NLL."""

    name = "distill_skl"

    divergence_metric = "distill/skew_kl"

    def __init__(self, kd_ratio: float = 0.5, alpha: float = 0.1):
        super().__init__(kd_ratio)
        self.alpha = check_number("method.alpha", alpha, low=0, high=1, low_open=False)

    def token_divergence(self, inputs: ObjectiveInputs) -> torch.Tensor:
        return inputs.distributions.kl("teacher", "policy", rows="chosen", skew=self.alpha)
