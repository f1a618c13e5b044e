"""The token scorers of the ``scorer`` config group.

A scorer maps ``TokenEvidence`` about B rows (all chosen or all rejected) to scores [B, T], higher = keep first,
and says what evidence it reads in ``needs`` (``selector``: log-probs under the selecting model, the reference
unless ``selector_model`` is set; ``selector_base``: under that model's own start; ``decisive``: the data's
decisive-token mask). ``select`` turns scores into the kept tokens; by default the top share of each row.
"""

from __future__ import annotations

import torch

from selalign.objectives.base import TokenEvidence
from selalign.selection import select_top_tokens


class Scorer:
    """Base of the scorers: ``score(evidence)`` plus the paper's per-row top-share selection."""

    needs: frozenset[str] = frozenset()
    name: str = ""

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        raise NotImplementedError

    def select(self, scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
        """bool [B, T]: the tokens kept (``select_top_tokens``: each row's top ``ratio`` share, ties kept)."""
        return select_top_tokens(scores, mask, ratio)


class LogpDiff(Scorer):
    """The paper's alignment score (arXiv 2507.07725, Eq. 4), with the selector in the reference's place.

    chosen:   s_t = log pi_sel(y_t | .) - log pi_theta(y_t | .)   (tokens the selector likes more than the policy)
    rejected: s_t = log pi_theta(y_t | .) - log pi_sel(y_t | .)   (tokens the policy likes more than the selector)
    """

    needs = frozenset({"selector"})
    name = "logp_diff"

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        gap = evidence.selector - evidence.policy
        return gap if evidence.chosen else -gap


class AbsDiff(Scorer):
    """s_t = |log pi_theta(y_t | .) - log pi_sel(y_t | .)|, the same for chosen and rejected tokens."""

    needs = frozenset({"selector"})
    name = "abs_diff"

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        return (evidence.policy - evidence.selector).abs()


class ImplicitReward(Scorer):
    """Token rewards of a small aligned pair (SePO, Yang et al. 2024, "Selective Preference Optimization via Token-Level
    Reward Function Estimation"): the DPO implicit reward of each token under the selector (a DPO-tuned model) against
    its own starting model (``selector_base``, the SFT model it was tuned from), up to SePO's positive factor beta.

    chosen:   s_t = log pi_sel(y_t | .) - log pi_base(y_t | .)      (tokens the aligned model rewards)
    rejected: s_t = log pi_base(y_t | .) - log pi_sel(y_t | .)      (tokens it penalises)

    Keeping each row's top share selects SePO's tokens: the highest-reward chosen and the lowest-reward rejected
    ones. The scores do not depend on the policy, so they can be cached with ``ref_cache=true``. SePO then trains
    reference-free on the selected tokens; with ``method=selective_dpo`` the reference keeps anchoring the loss.
    """

    needs = frozenset({"selector", "selector_base"})
    name = "implicit_reward"

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        if evidence.selector_base is None:
            raise ValueError(
                "scorer=implicit_reward reads the selector's starting model: set selector_base_model=<a model config> "
                "(and selector_model=<its DPO-tuned version>, e.g. selector_model=world_small_dpo selector_base_model=world_small)"
            )
        reward = evidence.selector - evidence.selector_base
        return reward if evidence.chosen else -reward


class RandomScore(Scorer):
    """s_t ~ U(0, 1), independent of every model: the control that tells whether selection beats chance.

    Draws from its own generator (seeded by ``seed``) so that the control does not shift other random streams.
    """

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        device = evidence.policy.device
        return torch.rand(evidence.policy.shape, generator=self._generator(device), device=device, dtype=evidence.policy.dtype)

    def state_dict(self) -> dict:
        return {str(device): generator.get_state() for device, generator in self._generators.items()}

    def load_state_dict(self, state: dict) -> None:
        for device, generator_state in state.items():
            self._generator(torch.device(device)).set_state(generator_state)


class Oracle(Scorer):
    """s_t = 1 on the tokens the data marks decisive, 0 elsewhere; selects exactly those tokens, whatever the ratio.

    The upper bound of any scorer where the data marks decisive tokens (the offline world). A row without a decisive
    token selects nothing, so its pair contributes no gradient.
    """

    needs = frozenset({"decisive"})
    name = "oracle"

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        if evidence.decisive is None:
            raise ValueError("scorer=oracle needs data that marks decisive tokens (decisive_mask), e.g. data=world")
        return evidence.decisive.to(evidence.policy.dtype)

    def select(self, scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
        return mask.bool() & (scores > 0)
