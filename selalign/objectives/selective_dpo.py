"""Selective-DPO (Dong, arXiv 2507.07725): DPO on the tokens the reference singles out."""

from __future__ import annotations

import torch

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, masked_sum, preference_metrics
from selalign.objectives.dpo import dpo_loss
from selalign.objectives.sft import check_sft_weight, with_chosen_nll
from selalign.scoring import LogpDiff, Scorer
from selalign.selection import select_top_tokens


def selective_dpo_loss(
    policy_chosen_tok: torch.Tensor,
    policy_rejected_tok: torch.Tensor,
    ref_chosen_tok: torch.Tensor,
    ref_rejected_tok: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    beta: float,
    ratio: float,
    scorer: Scorer | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Selective-DPO on per-token log-probs.

    Args:
        policy_chosen_tok, policy_rejected_tok: [B, T] per-token log pi_theta of the response labels.
        ref_chosen_tok, ref_rejected_tok: [B, T] the same under the reference.
        chosen_mask, rejected_mask: bool [B, T], True on response tokens.
        beta: DPO inverse temperature. ratio: share of each sequence's response tokens kept, in (0, 1].
        scorer: token scorer, default the paper's ``LogpDiff`` (chosen: ref - policy; rejected: policy - ref).

    The selection is made without gradient, per sequence, by ``select_top_tokens`` (paper Eq. 5), and
    the DPO loss is taken on sums over the selected tokens only, for policy and reference alike (Eq. 6):
        losses = -log sigmoid(beta * [(S_sel pi(y_w) - S_sel ref(y_w)) - (S_sel pi(y_l) - S_sel ref(y_l))]).
    With ratio = 1 every response token is selected and this is plain DPO.

    Returns:
        (losses [B], chosen_rewards [B], rejected_rewards [B], chosen_selected bool [B, T], rejected_selected bool [B, T])
    """
    losses, chosen_rewards, rejected_rewards, chosen_selected, rejected_selected, _ = _selective_dpo(
        policy_chosen_tok, policy_rejected_tok, ref_chosen_tok, ref_rejected_tok,
        chosen_mask, rejected_mask, beta, ratio, scorer or LogpDiff(),
    )
    return losses, chosen_rewards, rejected_rewards, chosen_selected, rejected_selected


def _selective_dpo(policy_chosen_tok, policy_rejected_tok, ref_chosen_tok, ref_rejected_tok, chosen_mask, rejected_mask, beta, ratio, scorer):
    """``selective_dpo_loss`` that also returns the scores [2B, T] (chosen rows first), scored once per step."""
    with torch.no_grad():
        chosen_scores = scorer(policy_chosen_tok, ref_chosen_tok, chosen=True)
        rejected_scores = scorer(policy_rejected_tok, ref_rejected_tok, chosen=False)
        chosen_selected = select_top_tokens(chosen_scores, chosen_mask, ratio)
        rejected_selected = select_top_tokens(rejected_scores, rejected_mask, ratio)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        masked_sum(policy_chosen_tok, chosen_selected),
        masked_sum(policy_rejected_tok, rejected_selected),
        masked_sum(ref_chosen_tok, chosen_selected),
        masked_sum(ref_rejected_tok, rejected_selected),
        beta,
    )
    scores = torch.cat([chosen_scores, rejected_scores])
    return losses, chosen_rewards, rejected_rewards, chosen_selected, rejected_selected, scores


class SelectiveDPO(Objective):
    """Selective-DPO as a ``method``: selection recomputed every step from the current policy.

    ``sft_weight`` adds that times the chosen NLL over every chosen response token, selected or not (``with_chosen_nll``).
    """

    def __init__(self, beta: float = 0.1, ratio: float = 0.4, scorer: Scorer | None = None, sft_weight: float = 0.0):
        if beta <= 0:
            raise ValueError(f"method.beta must be > 0, got {beta}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"selection.ratio must be in (0, 1], got {ratio}")
        self.beta, self.ratio, self.scorer = beta, ratio, scorer or LogpDiff()
        self.sft_weight = check_sft_weight(sft_weight)

    def state_dict(self) -> dict:
        return {"scorer": self.scorer.state_dict()} if hasattr(self.scorer, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if "scorer" in state:
            self.scorer.load_state_dict(state["scorer"])

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        policy, ref, mask = inputs.policy_logps, inputs.ref_logps, inputs.response_mask
        chosen_mask, rejected_mask = inputs.chosen(mask), inputs.rejected(mask)
        losses, chosen_rewards, rejected_rewards, chosen_selected, rejected_selected, scores = _selective_dpo(
            inputs.chosen(policy), inputs.rejected(policy), inputs.chosen(ref), inputs.rejected(ref),
            chosen_mask, rejected_mask, self.beta, self.ratio, self.scorer,
        )
        losses, nll_metrics = with_chosen_nll(losses, inputs, self.sft_weight)
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(
            chosen_rewards, rejected_rewards, masked_sum(inputs.chosen(policy), chosen_mask), masked_sum(inputs.rejected(policy), rejected_mask)
        )
        metrics |= selection_metrics(scores, mask, chosen_selected, rejected_selected)
        metrics |= nll_metrics
        return ObjectiveOutput(loss, losses, metrics, torch.cat([chosen_selected, rejected_selected]), scores)


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
