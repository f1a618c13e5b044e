"""DPO under label noise: conservative DPO's label smoothing (Mitchell 2023, "A note on DPO with noisy preferences")
and the unbiased robust estimator of Chowdhury et al. 2024 ("Provably Robust DPO: Aligning Language Models with Noisy
Feedback"), both with epsilon the probability that a pair's label is flipped."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_sum, preference_metrics

ESTIMATORS = ("conservative", "unbiased")


def robust_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float,
    estimator: str = "conservative",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss for pairs whose label is flipped with probability eps.

    Args:
        policy_chosen, policy_rejected: [B] summed response log pi_theta(y_w | x), log pi_theta(y_l | x).
        ref_chosen, ref_rejected: [B] the same under the reference.
        beta: DPO inverse temperature. label_smoothing: eps in [0, 0.5).
        estimator: "conservative" or "unbiased".

    With z = beta * ((pi_w - ref_w) - (pi_l - ref_l)) and l(z) = -log sigmoid(z) (DPO paper, Eq. 7):

        conservative:  losses = (1 - eps) l(z) + eps l(-z)                      (cDPO note, Eq. 3)
            the expected DPO loss when the label is wrong with probability eps; minimal where sigmoid(z) = 1 - eps,
            so margins stop growing there.
        unbiased:      losses = [(1 - eps) l(z) - eps l(-z)] / (1 - 2 eps)       (rDPO, Chowdhury et al. 2024's robust loss)
            its expectation over the label flips is the clean DPO loss l(z), so it keeps DPO's minimiser; it is
            not bounded below (as z grows it decreases linearly) and it can be negative.

    eps = 0 gives DPO exactly with either estimator. Same expressions as TRL's ``loss_type="sigmoid"`` with
    ``label_smoothing`` and ``loss_type="robust"``.

    Returns:
        losses [B], chosen_rewards [B] = beta * (pi_w - ref_w), rejected_rewards [B] = beta * (pi_l - ref_l), detached.
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    logits = beta * (chosen_logratio - rejected_logratio)
    as_labelled, as_flipped = -F.logsigmoid(logits), -F.logsigmoid(-logits)
    if estimator == "conservative":
        losses = (1 - label_smoothing) * as_labelled + label_smoothing * as_flipped
    elif estimator == "unbiased":
        losses = ((1 - label_smoothing) * as_labelled - label_smoothing * as_flipped) / (1 - 2 * label_smoothing)
    else:
        raise ValueError(f"method.estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


class RobustDPO(Objective):
    """DPO over every response token with label-noise correction ``estimator`` at flip rate ``label_smoothing``."""

    name = "robust_dpo"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.1, estimator: str = "conservative"):
        self.beta = check_number("method.beta", beta, low=0)
        self.label_smoothing = check_number("method.label_smoothing", label_smoothing, low=0, high=0.5, low_open=False, high_open=True)
        if estimator not in ESTIMATORS:
            raise ValueError(f"method.estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
        self.estimator = estimator

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        summed_policy = masked_sum(inputs.policy_logps, inputs.response_mask)
        summed_ref = masked_sum(inputs.ref_logps, inputs.response_mask)
        losses, chosen_rewards, rejected_rewards = robust_dpo_loss(
            inputs.chosen(summed_policy), inputs.rejected(summed_policy), inputs.chosen(summed_ref), inputs.rejected(summed_ref),
            self.beta, self.label_smoothing, self.estimator,
        )
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        return ObjectiveOutput(loss, losses, metrics)
