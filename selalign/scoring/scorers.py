"""The token scorers of the ``scorer`` config group."""

from __future__ import annotations

from typing import Protocol

import torch


class Scorer(Protocol):
    def __call__(self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, *, chosen: bool) -> torch.Tensor: ...


class LogpDiff:
    """The paper's alignment score (arXiv 2507.07725, Eq. 4).

    chosen:   s_t = log pi_ref(y_t | .) - log pi_theta(y_t | .)   (tokens the reference likes more than the policy)
    rejected: s_t = log pi_theta(y_t | .) - log pi_ref(y_t | .)   (tokens the policy likes more than the reference)
    """

    def __call__(self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, *, chosen: bool) -> torch.Tensor:
        gap = ref_logps.detach() - policy_logps.detach()
        return gap if chosen else -gap


class AbsDiff:
    """s_t = |log pi_theta(y_t | .) - log pi_ref(y_t | .)|, the same for chosen and rejected tokens."""

    def __call__(self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, *, chosen: bool) -> torch.Tensor:
        return (policy_logps.detach() - ref_logps.detach()).abs()


class RandomScore:
    """s_t ~ U(0, 1), independent of both models: the control that tells whether selection beats chance.

    Draws from its own generator (seeded by ``seed``) so that the control does not shift other random streams.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, *, chosen: bool) -> torch.Tensor:
        device = policy_logps.device
        return torch.rand(policy_logps.shape, generator=self._generator(device), device=device, dtype=policy_logps.dtype)

    def state_dict(self) -> dict:
        return {str(device): generator.get_state() for device, generator in self._generators.items()}

    def load_state_dict(self, state: dict) -> None:
        for device, generator_state in state.items():
            self._generator(torch.device(device)).set_state(generator_state)
