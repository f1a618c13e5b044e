"""TIS-DPO (Liu et al. 2024, "TIS-DPO: Token-level Importance Sampling for Direct Preference Optimization With
Estimated Weights"): DPO on token log-ratios weighted by each token's estimated importance, instead of the hard
selection of Selective-DPO; the weights come from a token scorer."""

from __future__ import annotations

import torch

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_sum, preference_metrics, rewards_metrics
from selalign.objectives.dpo import dpo_loss
from selalign.scoring import LogpDiff, Scorer


def tis_weights(scores: torch.Tensor, mask: torch.Tensor, lower: float, upper: float, mu: float = 1.0) -> torch.Tensor:
    """Bounded per-token importance weights, normalised to mean 1 over each response.

    Args:
        scores: [B, T] token scores, higher = more important (a scorer's output; for the chosen rows a token the
            contrast favours, for the rejected rows one it disfavours).
        mask: bool [B, T], True on response tokens. lower < upper: the clamp bounds L, U. mu: scale > 0.

    Returns:
        [B, T], w_t = k_b * exp(mu * clamp(s_t, L, U)) on response tokens and 0 elsewhere, with k_b such that the
        weights of row b average to 1 over its response tokens: the paper's estimate k * exp(mu * clamp(r_t, L, U)) of a
        contrastive log-ratio r_t, with its normalising constant k fixed per response. Any two weights of a row differ
        by a factor of at most exp(mu * (U - L)); equal scores give weights of exactly 1.
    """
    # Shifting by the row's largest clamped score leaves the normalised weights unchanged, keeps exp <= 1, and makes
    # equal scores exactly 1.
    clamped = scores.clamp(lower, upper)
    top = clamped.masked_fill(~mask, lower).amax(dim=-1, keepdim=True)  # every clamped score is >= lower
    raw = torch.where(mask, torch.exp(mu * (clamped - top)), torch.zeros_like(scores))
    counts = mask.sum(dim=-1, keepdim=True).to(scores.dtype)
    return raw * (counts / raw.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny))


def tis_dpo_loss(
    policy_chosen_tok: torch.Tensor,
    policy_rejected_tok: torch.Tensor,
    ref_chosen_tok: torch.Tensor,
    ref_rejected_tok: torch.Tensor,
    chosen_weights: torch.Tensor,
    rejected_weights: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO on importance-weighted sums of token log-ratios.

    Args:
        policy_chosen_tok, policy_rejected_tok: [B, T] per-token log pi_theta of the response labels.
        ref_chosen_tok, ref_rejected_tok: [B, T] the same under the reference.
        chosen_weights, rejected_weights: [B, T] token weights w_t >= 0, 0 off the response (``tis_weights``), without
            gradient.
        beta: DPO inverse temperature.

    Returns:
        losses [B] = -log sigmoid(beta * [sum_t w^w_t log(pi(y_w,t) / ref(y_w,t)) - sum_t w^l_t log(pi(y_l,t) / ref(y_l,t))])
        (TIS-DPO's weighted Bradley-Terry objective), chosen_rewards [B], rejected_rewards [B] (beta times the weighted
        log-ratio sums), detached. With every weight 1 on the response this is ``dpo_loss`` on summed log-probs.
    """
    return dpo_loss(
        masked_sum(policy_chosen_tok, chosen_weights), masked_sum(policy_rejected_tok, rejected_weights),
        masked_sum(ref_chosen_tok, chosen_weights), masked_sum(ref_rejected_tok, rejected_weights),
        beta,
    )


class TISDPO(Objective):
    """TIS-DPO as a ``method``: the scorer's token scores become bounded weights (``tis_weights``), re-computed every
    step without gradient, and DPO is taken on the weighted log-ratios (``tis_dpo_loss``).

    The paper estimates the weights once, before training, from a pair of contrastive models pi+ and pi- (log pi+ -
    log pi-, sign-flipped on the losing response); here any scorer supplies them: ``scorer=implicit_reward`` with a
    DPO-tuned selector and its starting model is the paper's DPO-based contrast (the paper contrasts forward- and
    reverse-DPO models), the default ``logp_diff`` weighs by the reference-versus-policy score that Selective-DPO
    thresholds. Where the paper and this class differ from the authors' released code: the code turns the contrast
    into weights by rank within each response, mapped linearly onto [0.7, 1.3] (its default transform keeps every
    weight at 1), not by a clamped exponential; and it has an optional weighted sequential-KL term (``token_level``,
    off by default), which is left out here.

    Limit tying it to DPO: with equal scores within each response (e.g. a constant scorer) every weight is 1 and this
    is exactly ``dpo``. ``rewards/*`` are over the weighted log-ratios the loss sees, ``rewards_all/*`` over the
    unweighted ones (DPO's); ``weights/min`` and ``weights/max`` span the weights of the batch's response tokens.
    """

    name = "tis_dpo"

    def __init__(self, beta: float = 0.1, lower: float = -1.0, upper: float = 1.0, mu: float = 1.0, scorer: Scorer | None = None):
        self.beta = check_number("method.beta", beta, low=0)
        self.lower, self.upper = check_number("method.lower", lower), check_number("method.upper", upper)
        if not self.lower < self.upper:
            raise ValueError(f"method.lower must be below method.upper, got lower={lower} and upper={upper}")
        self.mu = check_number("method.mu", mu, low=0)
        self.scorer = scorer or LogpDiff()

    def weights(self, inputs: ObjectiveInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [2B, T], weights [2B, T]), chosen rows first, without gradient."""
        with torch.no_grad():
            scores = torch.cat([self.scorer(inputs.evidence(chosen)) for chosen in (True, False)])
            return scores, tis_weights(scores, inputs.response_mask, self.lower, self.upper, self.mu)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        policy, ref, mask = inputs.policy_logps, inputs.ref_logps, inputs.response_mask
        _, weights = self.weights(inputs)
        losses, chosen_rewards, rejected_rewards = tis_dpo_loss(
            inputs.chosen(policy), inputs.rejected(policy), inputs.chosen(ref), inputs.rejected(ref),
            inputs.chosen(weights), inputs.rejected(weights), self.beta,
        )
        loss = losses.mean()
        summed_policy, summed_ref = masked_sum(policy, mask), masked_sum(ref, mask)
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        all_chosen = self.beta * (inputs.chosen(summed_policy) - inputs.chosen(summed_ref))
        all_rejected = self.beta * (inputs.rejected(summed_policy) - inputs.rejected(summed_ref))
        metrics |= rewards_metrics(all_chosen, all_rejected, prefix="rewards_all")
        response_weights = weights[mask]
        metrics |= {"weights/min": response_weights.min(), "weights/max": response_weights.max()}
        return ObjectiveOutput(loss, losses, metrics)
