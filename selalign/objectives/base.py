"""What every objective receives and returns.

The module computes per-token log-probs once per step and hands them to the objective; the objective
alone knows the method. Rows are [chosen; rejected] concatenated on the batch axis: B pairs -> 2B rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ObjectiveInputs:
    """Per-token tensors of one step, [2B, T] each, chosen rows first.

    ``policy_logps[:, t]`` is log pi_theta(input_ids[:, t] | input_ids[:, :t]) (0 at t = 0);
    ``ref_logps`` the same under the frozen reference, without gradient (None if the objective needs none);
    ``response_mask`` is True on response tokens, the only ones any objective may use.

    Distillation objectives (``needs_teacher``) also get ``policy_logits`` [2B, T, V] (with gradient) and
    ``teacher_logits`` [B, T, V] of the chosen rows (without gradient); ``logits[:, t]`` predicts token t + 1,
    so the distribution behind ``policy_logps[:, t]`` is ``logits[:, t - 1]``. Both are sliced to the
    tokenizer's vocabulary, and only for one micro-batch at a time.
    """

    policy_logps: torch.Tensor
    response_mask: torch.Tensor
    ref_logps: torch.Tensor | None = None
    policy_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.policy_logps.shape[0] // 2

    def chosen(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[: self.num_pairs]

    def rejected(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.num_pairs :]


@dataclass
class ObjectiveOutput:
    """``loss`` is the scalar to minimise, ``losses`` the per-pair values [B], ``metrics`` flat named scalars.

    Token-selective objectives also return ``selected`` (bool [2B, T], the tokens that carried the loss)
    and ``token_scores`` ([2B, T]), which callbacks use for selection precision and pictures.
    """

    loss: torch.Tensor
    losses: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    selected: torch.Tensor | None = None
    token_scores: torch.Tensor | None = None


class Objective:
    """Base class of the ``method`` config group. Subclasses implement ``__call__``.

    ``needs_reference`` tells the module whether to run (or read from cache) the reference model;
    ``needs_teacher`` whether to run the teacher and pass full-vocabulary logits.
    """

    needs_reference: bool = True
    needs_teacher: bool = False

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Random state an objective carries (e.g. a random scorer's generator), saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the positions where ``mask`` is True, per row: [B, T] -> [B]."""
    return (values * mask).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True, per row: [B, T] -> [B] (0 for an empty row)."""
    return masked_sum(values, mask) / mask.sum(dim=-1).clamp(min=1)


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The dashboard names users know from TRL, averaged over the pairs of the batch."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
