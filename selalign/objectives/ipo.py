"""Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
Human Preferences"): DPO's log-ratio margin regressed onto a fixed target instead of pushed through a sigmoid."""

from __future__ import annotations

import torch

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_mean, masked_sum, preference_metrics


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO's squared loss on the log-ratio margin.

    Args:
        policy_chosen, policy_rejected: [B] log pi_theta(y_w | x), log pi_theta(y_l | x), summed or averaged over
            each response's tokens (``IPO`` says which and why).
        ref_chosen, ref_rejected: [B] the same under the reference, reduced the same way.
        beta: the paper's regularisation tau > 0 (TRL's ``beta``); the target margin is 1 / (2 beta).

    Returns:
        losses [B] = (h - 1 / (2 beta))^2 with h = (pi_w - ref_w) - (pi_l - ref_l)   (IPO paper, Eq. 17)
        chosen_rewards [B] = beta * (pi_w - ref_w), rejected_rewards [B] = beta * (pi_l - ref_l), detached.

    h is exactly DPO's margin (``dpo_loss`` takes -log sigmoid(beta h)); where DPO keeps pushing h up for ever,
    IPO's gradient 2 (h - 1 / (2 beta)) vanishes at the target and pulls back beyond it.
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    losses = (chosen_logratio - rejected_logratio - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


class IPO(Objective):
    """IPO over every response token.

    ``length_average`` (default True) takes each response's log-ratio as the mean over its tokens, as TRL's
    ``loss_type="ipo"`` does; False sums them, which is the paper's h (a sequence log-likelihood ratio). The mean is
    the default because the squared loss pins h to the fixed target 1 / (2 beta): with sums, the same beta asks a
    long response for the same total margin as a short one, so the effective regularisation depends on length; with
    means the target is a per-token margin. With ``length_average=False`` h and the ``rewards/*`` metrics are
    exactly DPO's. ``logps/*`` are summed response log-probs either way, as for every method.
    """

    name = "ipo"

    def __init__(self, beta: float = 0.1, length_average: bool = True):
        self.beta = check_number("method.beta", beta, low=0)
        if not isinstance(length_average, bool):
            raise ValueError(f"method.length_average must be true or false, got {length_average!r}")
        self.length_average = length_average

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        mask = inputs.response_mask
        reduce = masked_mean if self.length_average else masked_sum
        policy, ref = reduce(inputs.policy_logps, mask), reduce(inputs.ref_logps, mask)
        losses, chosen_rewards, rejected_rewards = ipo_loss(
            inputs.chosen(policy), inputs.rejected(policy), inputs.chosen(ref), inputs.rejected(ref), self.beta,
        )
        loss = losses.mean()
        summed_policy = masked_sum(inputs.policy_logps, mask)
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        return ObjectiveOutput(loss, losses, metrics)
