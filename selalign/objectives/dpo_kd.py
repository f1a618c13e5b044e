"""DPO with a forward-KL distillation term from a teacher on the chosen responses."""

from __future__ import annotations

import torch

from selalign.objectives.base import ObjectiveInputs, ObjectiveOutput, check_number, masked_mean, masked_sum, preference_metrics
from selalign.objectives.dpo import DPO, dpo_loss
from selalign.objectives.sft import with_chosen_nll


def dpo_kd_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    token_kl: torch.Tensor,
    chosen_mask: torch.Tensor,
    beta: float,
    kd_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO plus kd_weight times the token-mean forward KL from the teacher on the chosen responses.

    Args:
        policy_chosen, policy_rejected: [B] summed response log pi_theta(y_w | x), log pi_theta(y_l | x).
        ref_chosen, ref_rejected: [B] the same under the reference.
        token_kl: [B, T] tau^2 KL(p_T || q_theta) at each chosen response token (``forward_kl_per_token``).
        chosen_mask: bool [B, T], True on chosen response tokens.
        beta: DPO inverse temperature. kd_weight: lambda >= 0.

    Returns:
        losses [B] = dpo_loss_b + lambda * KL_b, chosen_rewards [B], rejected_rewards [B], KL_b [B], where
        KL_b = (1 / |y_w|) sum_{t in y_w} token_kl[b, t].
    """
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    kl = masked_mean(token_kl, chosen_mask)
    return losses + kd_weight * kl, chosen_rewards, rejected_rewards, kl


class DPOKD(DPO):
    """DPO over every response token, plus ``kd_weight`` times the forward KL from the teacher on the chosen
    responses, plus ``sft_weight`` times the chosen NLL."""

    name = "dpo_kd"

    distributions = {"policy": "chosen", "teacher": "chosen"}

    def __init__(self, beta: float = 0.1, kd_weight: float = 0.1, temperature: float = 1.0, sft_weight: float = 0.0):
        super().__init__(beta, sft_weight)
        self.kd_weight = check_number("method.kd_weight", kd_weight, low=0, low_open=False)
        self.temperature = check_number("method.temperature", temperature, low=0)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        summed_policy = masked_sum(inputs.policy_logps, inputs.response_mask)
        summed_ref = masked_sum(inputs.ref_logps, inputs.response_mask)
        token_kl = self.temperature**2 * inputs.distributions.kl("teacher", "policy", rows="chosen", temperature=self.temperature)
        losses, chosen_rewards, rejected_rewards, kl = dpo_kd_loss(
            inputs.chosen(summed_policy), inputs.rejected(summed_policy),
            inputs.chosen(summed_ref), inputs.rejected(summed_ref),
            token_kl, inputs.chosen(inputs.response_mask), self.beta, self.kd_weight,
        )
        losses, nll_metrics = with_chosen_nll(losses, inputs, self.sft_weight)
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        metrics |= {"distill/kl": kl.detach().mean()} | nll_metrics
        return ObjectiveOutput(loss, losses, metrics)
