"""SimPO on the hand-checkable tiny case (see objective_cases) and its tie to DPO."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.module import frozen_roles
from selalign.objectives import ObjectiveInputs, SimPO, dpo_loss, simpo_loss

from support.objective_cases import objective_inputs, random_pairs, tiny_case


def reference_free(case, **overrides):
    return objective_inputs(case, ref_logps=None, **overrides)


def test_simpo_by_hand_without_a_reference():
    # Mean token log-probs: chosen (-1 - 2) / 2 = -1.5, rejected (-3 - 1 - 2) / 3 = -2.
    output = SimPO(beta=2.0, gamma=0.5)(reference_free(tiny_case()))
    z = 2.0 * -1.5 - 2.0 * -2.0 - 0.5
    assert output.loss.item() == pytest.approx(math.log(1 + math.exp(-z)))
    assert output.metrics["rewards/chosen"].item() == pytest.approx(-3.0)
    assert output.metrics["rewards/rejected"].item() == pytest.approx(-4.0)
    assert output.metrics["rewards/margins"].item() == pytest.approx(1.0)
    assert output.metrics["logps/chosen"].item() == pytest.approx(-3.0)  # summed, as for every method
    assert output.metrics["logps/rejected"].item() == pytest.approx(-6.0)


def test_sft_weight_adds_the_chosen_nll():
    case = tiny_case()
    plain = SimPO(beta=2.0, gamma=0.5)(reference_free(case))
    with_nll = SimPO(beta=2.0, gamma=0.5, sft_weight=0.4)(reference_free(case))
    assert with_nll.loss.item() == pytest.approx(plain.loss.item() + 0.4 * case.chosen_nll)
    assert with_nll.metrics["nll/chosen"].item() == pytest.approx(case.chosen_nll)


@pytest.mark.parametrize("gamma", [0.0, 0.8])
def test_simpo_is_dpo_on_mean_log_probs_against_a_reference_with_margin_gamma_over_beta(gamma):
    policy, _, mask = random_pairs()
    b = policy.shape[0] // 2
    means = (policy * mask).sum(-1) / mask.sum(-1)
    output = SimPO(beta=1.7, gamma=gamma)(ObjectiveInputs(policy_logps=policy, response_mask=mask))
    offset = torch.full((b,), -0.7, dtype=torch.float64)  # any reference level; only its chosen-rejected gap matters
    dpo, _, _ = dpo_loss(means[:b], means[b:], offset + gamma / 1.7, offset, beta=1.7)
    torch.testing.assert_close(output.losses, dpo, atol=1e-9, rtol=0)


def test_no_reference_is_read_or_run():
    assert not SimPO().needs_reference and frozen_roles(SimPO(), has_selector=False) == {}


def test_gradient_reaches_response_tokens_only_and_prompt_and_padding_never_count():
    case = tiny_case()
    policy_logps = case.policy_logps.clone().requires_grad_()
    output = SimPO()(reference_free(case, policy_logps=policy_logps))
    output.loss.backward()
    assert torch.equal(policy_logps.grad != 0, case.response_mask)
    changed = case.policy_logps.clone()
    changed[~case.response_mask] = -7.0
    assert torch.equal(SimPO()(reference_free(case, policy_logps=changed)).loss, output.loss.detach())


def test_simpo_loss_takes_gamma_in_reward_units():
    losses, chosen, rejected = simpo_loss(torch.tensor([-1.0]), torch.tensor([-1.25]), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(math.log(2.0))  # 2 * 0.25 - 0.5 = 0
    assert (chosen.item(), rejected.item()) == (-2.0, -2.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"),
    ({"gamma": -0.1}, r"method.gamma must be >= 0, got -0.1"),
    ({"sft_weight": -1.0}, r"method.sft_weight must be >= 0, got -1.0"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimPO(**kwargs)
