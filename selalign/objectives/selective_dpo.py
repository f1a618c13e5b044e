"""Selective-DPO (Dong, arXiv 2507.07725): DPO on the tokens a scorer singles out (the paper's: the reference)."""

from __future__ import annotations

import torch

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_sum, preference_metrics, rewards_metrics
from selalign.objectives.dpo import dpo_loss
from selalign.objectives.sft import check_sft_weight, with_chosen_nll
from selalign.scoring import LogpDiff, Scorer


def selective_dpo_loss(
    policy_chosen_tok: torch.Tensor,
    policy_rejected_tok: torch.Tensor,
    ref_chosen_tok: torch.Tensor,
    ref_rejected_tok: torch.Tensor,
    chosen_selected: torch.Tensor,
    rejected_selected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Selective-DPO on per-token log-probs and the tokens already selected.

    Args:
        policy_chosen_tok, policy_rejected_tok: [B, T] per-token log pi_theta of the response labels.
        ref_chosen_tok, ref_rejected_tok: [B, T] the same under the reference (the anchor of the loss).
        chosen_selected, rejected_selected: bool [B, T], the kept response tokens (paper Eq. 5, made by a scorer).
        beta: DPO inverse temperature.

    The DPO loss is taken on sums over the selected tokens only, for policy and reference alike (paper Eq. 6):
        losses = -log sigmoid(beta * [(S_sel pi(y_w) - S_sel ref(y_w)) - (S_sel pi(y_l) - S_sel ref(y_l))]).
    With every response token selected this is plain DPO.

    Returns:
        (losses [B], chosen_rewards [B], rejected_rewards [B]), the rewards over the selected tokens, detached.
    """
    return dpo_loss(
        masked_sum(policy_chosen_tok, chosen_selected),
        masked_sum(policy_rejected_tok, rejected_selected),
        masked_sum(ref_chosen_tok, chosen_selected),
        masked_sum(ref_rejected_tok, rejected_selected),
        beta,
    )


def select_tokens(inputs: ObjectiveInputs, scorer: Scorer, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [2B, T], selected bool [2B, T]), chosen rows first: each side scored and selected per row, without gradient."""
    with torch.no_grad():
        scores, selected = [], []
        for chosen in (True, False):
            evidence = inputs.evidence(chosen)
            side_scores = scorer(evidence)
            scores.append(side_scores)
            selected.append(scorer.select(side_scores, evidence.mask, ratio))
    return torch.cat(scores), torch.cat(selected)


class SelectiveDPO(Objective):
    """Selective-DPO (paper Eq. 4-6) as a ``method``: the selection is recomputed every step from the current policy.

    ``scorer`` ranks the tokens (default the paper's ``LogpDiff``), ``ratio`` is the share of each response's tokens
    kept. ``sft_weight`` adds that times the chosen NLL over every chosen response token, selected or not
    (``with_chosen_nll``).

    Besides the usual ``rewards/*`` over the selected tokens, it logs ``rewards_all/*`` over every response token.
    The two differ by construction: the paper's rule keeps the chosen tokens the policy likes least relative to the
    reference and the rejected tokens it likes most, so over the selection the chosen reward tends to sit below the
    rejected one and ``rewards/accuracies`` stays near 0 while ``rewards_all/accuracies`` measures the preference.
    """

    name = "selective_dpo"

    def __init__(self, beta: float = 0.1, ratio: float = 0.4, scorer: Scorer | None = None, sft_weight: float = 0.0):
        self.beta = check_number("method.beta", beta, low=0)
        self.ratio = check_number("method.ratio", ratio, low=0, high=1)
        self.scorer = scorer or LogpDiff()
        self.sft_weight = check_sft_weight(sft_weight)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        policy, ref, mask = inputs.policy_logps, inputs.ref_logps, inputs.response_mask
        scores, selected = select_tokens(inputs, self.scorer, self.ratio)
        losses, chosen_rewards, rejected_rewards = selective_dpo_loss(
            inputs.chosen(policy), inputs.rejected(policy), inputs.chosen(ref), inputs.rejected(ref),
            inputs.chosen(selected), inputs.rejected(selected), self.beta,
        )
        losses, nll_metrics = with_chosen_nll(losses, inputs, self.sft_weight)
        loss = losses.mean()
        summed_policy, summed_ref = masked_sum(policy, mask), masked_sum(ref, mask)
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        all_chosen = self.beta * (inputs.chosen(summed_policy) - inputs.chosen(summed_ref))
        all_rejected = self.beta * (inputs.rejected(summed_policy) - inputs.rejected(summed_ref))
        metrics |= rewards_metrics(all_chosen, all_rejected, prefix="rewards_all")
        metrics |= selection_metrics(scores, mask, inputs.chosen(selected), inputs.rejected(selected))
        metrics |= nll_metrics
        return ObjectiveOutput(loss, losses, metrics, selected, scores)


def selection_metrics(scores: torch.Tensor, mask: torch.Tensor, chosen_selected: torch.Tensor, rejected_selected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fractions of response tokens kept, and the mean score of kept and dropped tokens (chosen and rejected pooled).

    ``scores`` and ``mask`` are [2B, T] with chosen rows first; the selections are [B, T] each.
    """
    num_pairs = chosen_selected.shape[0]
    selected = torch.cat([chosen_selected, rejected_selected])
    dropped = mask & ~selected
    return {
        "selection/kept_chosen": chosen_selected.sum() / mask[:num_pairs].sum().clamp(min=1),
        "selection/kept_rejected": rejected_selected.sum() / mask[num_pairs:].sum().clamp(min=1),
        "selection/score_kept": masked_sum(scores, selected).sum() / selected.sum().clamp(min=1),
        "selection/score_dropped": masked_sum(scores, dropped).sum() / dropped.sum().clamp(min=1),
    }
