"""Token-level DPO (Zeng et al. 2024, "Token-level Direct Preference Optimization"): DPO's margin corrected by the
difference of the sequential forward KL divergences of the two responses from the reference, TDPO1 and TDPO2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, check_number, masked_sum, preference_metrics

VARIANTS = ("tdpo1", "tdpo2")


def tdpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    seq_kl_chosen: torch.Tensor,
    seq_kl_rejected: torch.Tensor,
    beta: float,
    alpha: float = 0.5,
    variant: str = "tdpo2",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TDPO1 and TDPO2 on summed response log-probs and sequential KL divergences.

    Args:
        policy_chosen, policy_rejected: [B] summed response log pi_theta(y_w | x), log pi_theta(y_l | x).
        ref_chosen, ref_rejected: [B] the same under the reference.
        seq_kl_chosen, seq_kl_rejected: [B] D_SeqKL(x, y; pi_ref || pi_theta) = sum over the response's tokens t of
            KL(pi_ref(. | x, y_<t) || pi_theta(. | x, y_<t)), the forward KL of the next-token distributions, with
            gradient through pi_theta.
        beta: inverse temperature. alpha: TDPO2's weight of the KL term (TDPO1 weighs it by 1).
        variant: "tdpo1" or "tdpo2".

    With u = beta * ((pi_w - ref_w) - (pi_l - ref_l)) (DPO's logit):

        TDPO1:  losses = -log sigmoid(u - delta),   delta = beta * (D_SeqKL(y_l) - D_SeqKL(y_w))   (the paper's L_TDPO1)
        TDPO2:  losses = -log sigmoid(u - alpha * delta_2),
                delta_2 = beta * D_SeqKL(y_l) - sg(beta * D_SeqKL(y_w))                            (the paper's L_TDPO2)

    sg is stop-gradient: TDPO2 lets the chosen response's KL set the level but trains only through the rejected
    one's. These are the expressions of the authors' ``tdpo_loss`` (``if_tdpo2``), KL taken at temperature 1 in float32. Limits tying it to DPO: TDPO2 with alpha = 0 is DPO; both equal DPO (loss and gradient) wherever the policy's
    next-token distributions equal the reference's, since each KL and its gradient vanish there.

    Returns:
        losses [B], chosen_rewards [B] = beta * (pi_w - ref_w), rejected_rewards [B] = beta * (pi_l - ref_l), detached:
        DPO's implicit rewards, comparable across methods; the authors' code logs beta * (log-ratio + D_SeqKL) instead.
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    margin = chosen_logratio - rejected_logratio
    if variant == "tdpo1":
        logits = margin - (seq_kl_rejected - seq_kl_chosen)
    elif variant == "tdpo2":
        logits = margin - alpha * (seq_kl_rejected - seq_kl_chosen.detach())
    else:
        raise ValueError(f"method.variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
    losses = -F.logsigmoid(beta * logits)
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


class TDPO(Objective):
    """TDPO over every response token; the sequential KL comes from the policy's and the reference's next-token
    distributions (``ObjectiveInputs.distributions``, computed chunk by chunk like the distillation objectives).

    ``variant`` picks TDPO1 or TDPO2 (the authors' ``if_tdpo2``); ``alpha`` is TDPO2's and, as in the authors' code,
    unused by TDPO1. Logs ``kl/chosen``, ``kl/rejected`` (mean D_SeqKL over the pairs) and ``kl/margin`` (chosen minus
    rejected), the authors' dashboard names.
    """

    name = "tdpo"

    distributions = {"policy": "all", "reference": "all"}

    def __init__(self, beta: float = 0.1, alpha: float = 0.5, variant: str = "tdpo2"):
        self.beta = check_number("method.beta", beta, low=0)
        self.alpha = check_number("method.alpha", alpha, low=0, low_open=False)
        if variant not in VARIANTS:
            raise ValueError(f"method.variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
        self.variant = variant

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        mask = inputs.response_mask
        summed_policy, summed_ref = masked_sum(inputs.policy_logps, mask), masked_sum(inputs.ref_logps, mask)
        seq_kl = masked_sum(inputs.distributions.kl("reference", "policy", rows="all"), mask)
        losses, chosen_rewards, rejected_rewards = tdpo_loss(
            inputs.chosen(summed_policy), inputs.rejected(summed_policy), inputs.chosen(summed_ref), inputs.rejected(summed_ref),
            inputs.chosen(seq_kl), inputs.rejected(seq_kl), self.beta, self.alpha, self.variant,
        )
        loss = losses.mean()
        kl_chosen, kl_rejected = inputs.chosen(seq_kl).detach(), inputs.rejected(seq_kl).detach()
        metrics = {"loss": loss.detach()}
        metrics |= preference_metrics(chosen_rewards, rejected_rewards, inputs.chosen(summed_policy), inputs.rejected(summed_policy))
        metrics |= {"kl/chosen": kl_chosen.mean(), "kl/rejected": kl_rejected.mean(), "kl/margin": (kl_chosen - kl_rejected).mean()}
        return ObjectiveOutput(loss, losses, metrics)
