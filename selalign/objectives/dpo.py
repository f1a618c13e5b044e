"""Direct Preference Optimization (Rafailov et al. 2023), sigmoid loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_sum, preference_metrics
from selalign.objectives.sft import check_sft_weight, with_chosen_nll


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO on summed response log-probs.

    Args:
        policy_chosen, policy_rejected: [B] log pi_theta(y_w | x), log pi_theta(y_l | x).
        ref_chosen, ref_rejected: [B] the same under the reference.
        beta: inverse temperature of the implicit reward.

    Returns:
        losses [B] = -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))   (DPO paper, Eq. 7)
        chosen_rewards [B] = beta * (pi_w - ref_w), rejected_rewards [B] = beta * (pi_l - ref_l), detached.
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


class DPO(Objective):
    """Plain DPO over every response token, plus ``sft_weight`` times the chosen NLL (``with_chosen_nll``)."""

    name = "dpo"

    def __init__(self, beta: float = 0.1, sft_weight: float = 0.0):
        self.beta, self.sft_weight = check_number("method.beta", beta, low=0), check_sft_weight(sft_weight)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        summed_policy = masked_sum(inputs.policy_logps, inputs.response_mask)
        summed_ref = masked_sum(inputs.ref_logps, inputs.response_mask)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            inputs.chosen(summed_policy), inputs.rejected(summed_policy),
            inputs.chosen(summed_ref), inputs.rejected(summed_ref),
            self.beta,
        )
        losses, nll_metrics = with_chosen_nll(losses, inputs, self.sft_weight)
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        metrics |= nll_metrics
        return ObjectiveOutput(loss, losses, metrics)
