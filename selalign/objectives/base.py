"""What every objective receives and returns.

The module computes per-token log-probs once per step and hands them to the objective; the objective
alone knows the method. Rows are [chosen; rejected] concatenated on the batch axis: B pairs -> 2B rows.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class TokenDistributions(Protocol):
    """The next-token distributions of the step's models, read one divergence at a time.

    Roles: ``policy`` (with gradient), ``reference``, ``teacher``. An objective declares the roles and rows it
    reads in ``Objective.distributions``; the module provides exactly those (from full logits, or computed in
    chunks from hidden states, with equal results).
    """

    def kl(self, p: str, q: str, rows: str = "all", temperature: float = 1.0, skew: float = 0.0) -> torch.Tensor:
        """[R, T]: at each response token of the ``rows`` ("chosen", "rejected" or "all"), the KL of role ``p``'s
        distribution against ``skew * P + (1 - skew) * Q``, both at logits / ``temperature``
        (``selalign.logprobs.token_kl``); 0 at other positions."""
        ...


@dataclass
class ObjectiveInputs:
    """Per-token tensors of one step, [2B, T] each, chosen rows first.

    ``policy_logps[:, t]`` is log pi_theta(input_ids[:, t] | input_ids[:, :t]) (0 at t = 0);
    ``ref_logps`` the same under the frozen reference, without gradient (None if the objective needs none);
    ``response_mask`` is True on response tokens, the only ones any objective may use.

    For token scorers (``selalign.scoring``): ``selector_logps`` under the model that selects tokens (the
    reference itself unless ``selector_model`` is set), ``selector_base_logps`` under that selector's own starting
    model (``selector_base_model``, for implicit-reward scorers), ``decisive_mask`` where the data marks the tokens
    that decide the preference (synthetic settings). ``distributions`` gives the next-token distributions that
    the objective declared in ``Objective.distributions``.
    """

    policy_logps: torch.Tensor
    response_mask: torch.Tensor
    ref_logps: torch.Tensor | None = None
    selector_logps: torch.Tensor | None = None
    selector_base_logps: torch.Tensor | None = None
    decisive_mask: torch.Tensor | None = None
    distributions: TokenDistributions | None = None

    @property
    def num_pairs(self) -> int:
        return self.policy_logps.shape[0] // 2

    def chosen(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[: self.num_pairs]

    def rejected(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.num_pairs :]

    def evidence(self, chosen: bool) -> TokenEvidence:
        """What a token scorer may read about the chosen (or rejected) rows."""
        side = self.chosen if chosen else self.rejected
        optional = lambda tensor: None if tensor is None else side(tensor)  # noqa: E731
        return TokenEvidence(
            chosen=chosen, policy=side(self.policy_logps).detach(), mask=side(self.response_mask),
            selector=optional(self.selector_logps if self.selector_logps is not None else self.ref_logps),
            selector_base=optional(self.selector_base_logps), decisive=optional(self.decisive_mask),
        )


@dataclass
class TokenEvidence:
    """What a token scorer reads about B rows (all chosen or all rejected), [B, T] each, without gradient.

    ``policy``: log pi_theta of each label; ``selector``: log-probs under the selecting model (the reference unless
    ``selector_model`` is set); ``selector_base``: under the selector's starting model; ``decisive``: the data's
    decisive-token mask; ``mask``: the response tokens. Fields a run does not provide are None.
    """

    chosen: bool
    policy: torch.Tensor
    mask: torch.Tensor
    selector: torch.Tensor | None = None
    selector_base: torch.Tensor | None = None
    decisive: torch.Tensor | None = None


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

    What an objective reads, which the module provides and nothing more:
    ``needs_reference``: per-token log-probs of the reference (live or cached);
    ``distributions``: role -> rows ("chosen" or "all") whose next-token distributions it reads through
    ``ObjectiveInputs.distributions`` (e.g. ``{"policy": "chosen", "teacher": "chosen"}`` for distillation);
    ``scorer``: a token scorer (``selalign.scoring``), whose ``needs`` say which of the selector's log-probs and
    the decisive mask it reads; ``trains``: False for an objective that leaves the policy as it is (the
    untrained-start row of a comparison).
    """

    name: str = ""  # what runs, reports and dashboards call the method (with its scorer: ``selalign.loggers.method_label``)
    needs_reference: bool = True
    distributions: Mapping[str, str] = {}
    scorer: Any = None
    trains: bool = True

    @property
    def needs_teacher(self) -> bool:
        return "teacher" in self.distributions

    @property
    def scorer_needs(self) -> frozenset[str]:
        return frozenset(getattr(self.scorer, "needs", ())) if self.scorer is not None else frozenset()

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Random state an objective carries (e.g. a random scorer's generator), saved in checkpoints."""
        return {"scorer": self.scorer.state_dict()} if hasattr(self.scorer, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if "scorer" in state:
            self.scorer.load_state_dict(state["scorer"])


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, low_open: bool = True, high_open: bool = False) -> float:
    """``value`` as a float after checking that it is a number in the interval; the error names ``name``.

    ``low_open``/``high_open`` exclude the bounds, e.g. ``check_number("method.ratio", r, 0, 1)`` is 0 < r <= 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return float(value)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the positions where ``mask`` is True, per row: [B, T] -> [B]."""
    return (values * mask).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True, per row: [B, T] -> [B] (0 for an empty row)."""
    return masked_sum(values, mask) / mask.sum(dim=-1).clamp(min=1)


def rewards_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, prefix: str = "rewards") -> dict[str, torch.Tensor]:
    """``<prefix>/{chosen,rejected,margins,accuracies}`` averaged over the pairs, TRL's names."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        f"{prefix}/chosen": chosen_rewards.mean(),
        f"{prefix}/rejected": rejected_rewards.mean(),
        f"{prefix}/margins": (chosen_rewards - rejected_rewards).mean(),
        f"{prefix}/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
    }


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The dashboard names users know from TRL, averaged over the pairs of the batch."""
    return rewards_metrics(chosen_rewards, rejected_rewards) | {
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
