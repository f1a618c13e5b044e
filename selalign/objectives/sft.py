"""Supervised fine-tuning on the chosen responses, and the chosen-NLL term other objectives add (RPO style)."""

from __future__ import annotations

import torch

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_mean, masked_sum


def chosen_nll(policy_chosen_tok: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each chosen response, averaged over its tokens.

    Args:
        policy_chosen_tok: [B, T] per-token log pi_theta(y_t | x, y_<t) of the chosen rows.
        chosen_mask: bool [B, T], True on response tokens.

    Returns:
        [B], NLL_b = -(1 / |y_b|) * sum_{t in y_b} log pi_theta(y_t | x, y_<t)   (0 for an empty response).

    The token mean per sequence keeps the scale independent of response length, so the term weighs each
    pair equally and its weight means the same for short and long responses.
    """
    return -masked_mean(policy_chosen_tok, chosen_mask)


def with_chosen_nll(losses: torch.Tensor, inputs: ObjectiveInputs, sft_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Adds the chosen NLL to per-pair losses, as RPO does: losses_b + sft_weight * NLL_b (``chosen_nll``).

    Args:
        losses: [B] per-pair losses of a preference objective.
        inputs: the step's inputs; the NLL is taken over every response token of the chosen rows.
        sft_weight: weight of the NLL term, >= 0.

    Returns:
        The new losses [B] and {"nll/chosen": mean NLL}; for sft_weight = 0, ``losses`` unchanged and no metric.
    """
    if sft_weight == 0:
        return losses, {}
    nll = chosen_nll(inputs.chosen(inputs.policy_logps), inputs.chosen(inputs.response_mask))
    return losses + sft_weight * nll, {"nll/chosen": nll.detach().mean()}


def check_sft_weight(sft_weight: float) -> float:
    """``method.sft_weight`` as given, after checking it is >= 0."""
    return check_number("method.sft_weight", sft_weight, low=0, low_open=False)


class SFT(Objective):
    """Maximum likelihood of the chosen responses; the rejected rows and the reference are unused."""

    name = "sft"

    needs_reference = False

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        policy_chosen_tok, chosen_mask = inputs.chosen(inputs.policy_logps), inputs.chosen(inputs.response_mask)
        losses = chosen_nll(policy_chosen_tok, chosen_mask)
        loss = losses.mean()
        metrics = {
            "loss": loss.detach(),
            "nll/chosen": loss.detach(),
            "logps/chosen": masked_sum(policy_chosen_tok, chosen_mask).detach().mean(),
        }
        return ObjectiveOutput(loss, losses, metrics)


class Untrained(SFT):
    """No training step: the starting policy is validated (chosen NLL) and evaluated as it is.

    The row every method of a comparison is measured against, on the same sweep axis as the methods (``method=start``).
    """

    name = "start"

    trains = False
