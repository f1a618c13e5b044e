"""SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"): the reward is the
policy's own length-normalised log-likelihood, the preference must beat a target margin; no reference model runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_mean, masked_sum, preference_metrics
from selalign.objectives.sft import check_sft_weight, with_chosen_nll


def simpo_loss(
    policy_chosen_mean: torch.Tensor, policy_rejected_mean: torch.Tensor, beta: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO on length-normalised response log-probs.

    Args:
        policy_chosen_mean, policy_rejected_mean: [B] (1 / |y|) log pi_theta(y | x) of the chosen and rejected
            responses (the mean per-token log-prob over each response).
        beta: reward scale > 0. gamma: target reward margin >= 0, in reward units.

    Returns:
        losses [B] = -log sigmoid(beta / |y_w| log pi(y_w | x) - beta / |y_l| log pi(y_l | x) - gamma)   (SimPO, Eq. 6)
        chosen_rewards [B] = beta / |y_w| log pi(y_w | x), rejected_rewards likewise   (SimPO, Eq. 4), detached.

    The authors' trainer takes ``gamma_beta_ratio`` = gamma / beta and computes beta * (mean_w - mean_l - gamma / beta),
    the same number; TRL's CPO trainer (``loss_type="simpo"``) takes gamma itself as ``simpo_gamma``, as here.
    """
    chosen_rewards, rejected_rewards = beta * policy_chosen_mean, beta * policy_rejected_mean
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


class SimPO(Objective):
    """SimPO over every response token, plus ``sft_weight`` times the chosen NLL (``with_chosen_nll``; the authors'
    ``sft_weight`` averages the NLL over all chosen tokens of the batch instead of per response). No reference model is
    loaded or run.

    Limit tying it to DPO: SimPO(beta, gamma) is ``dpo_loss`` on the length-normalised log-probs against any reference
    whose length-normalised log-probs differ by gamma / beta between chosen and rejected (gamma = 0: a reference
    that rates both responses alike, per token).

    ``rewards/*`` are SimPO's rewards (beta times the mean log-prob, Eq. 4), as the authors log them; ``logps/*``
    are summed response log-probs, as for every method (the authors log the means).
    """

    name = "simpo"

    needs_reference = False

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, sft_weight: float = 0.0):
        self.beta = check_number("method.beta", beta, low=0)
        self.gamma = check_number("method.gamma", gamma, low=0, low_open=False)
        self.sft_weight = check_sft_weight(sft_weight)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        mask = inputs.response_mask
        mean_policy, summed_policy = masked_mean(inputs.policy_logps, mask), masked_sum(inputs.policy_logps, mask)
        losses, chosen_rewards, rejected_rewards = simpo_loss(inputs.chosen(mean_policy), inputs.rejected(mean_policy), self.beta, self.gamma)
        losses, nll_metrics = with_chosen_nll(losses, inputs, self.sft_weight)
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        metrics |= nll_metrics
        return ObjectiveOutput(loss, losses, metrics)
