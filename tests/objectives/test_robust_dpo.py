"""Label-noise-aware DPO on the hand-checkable tiny case (see objective_cases) and its ties to DPO."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.objectives import DPO, ObjectiveInputs, RobustDPO, robust_dpo_loss

from support.objective_cases import objective_inputs, random_pairs, tiny_case


def softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


def test_conservative_and_unbiased_by_hand():
    case = tiny_case()  # summed margin 1; with beta = 1, z = 1; -log sigmoid(z) = softplus(-z)
    conservative = RobustDPO(beta=1.0, label_smoothing=0.2)(objective_inputs(case))
    assert conservative.loss.item() == pytest.approx(0.8 * softplus(-1) + 0.2 * softplus(1))
    unbiased = RobustDPO(beta=1.0, label_smoothing=0.2, estimator="unbiased")(objective_inputs(case))
    assert unbiased.loss.item() == pytest.approx((0.8 * softplus(-1) - 0.2 * softplus(1)) / 0.6)
    dpo = DPO(beta=1.0)(objective_inputs(case))
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert torch.equal(conservative.metrics[name], dpo.metrics[name]) and torch.equal(unbiased.metrics[name], dpo.metrics[name])


@pytest.mark.parametrize("estimator", ["conservative", "unbiased"])
def test_no_label_noise_is_dpo_in_float64(estimator):
    policy, ref, mask = random_pairs()
    inputs = ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref)
    robust = RobustDPO(beta=0.3, label_smoothing=0.0, estimator=estimator)(inputs)
    dpo = DPO(beta=0.3)(inputs)
    torch.testing.assert_close(robust.losses, dpo.losses, atol=1e-9, rtol=0)


def test_the_unbiased_loss_averaged_over_label_flips_is_the_clean_dpo_loss():
    policy, ref, mask = random_pairs(seed=3)
    b = policy.shape[0] // 2
    sums = [(values[rows] * mask[rows]).sum(-1) for values in (policy, ref) for rows in (slice(None, b), slice(b, None))]
    eps = 0.3
    as_labelled, _, _ = robust_dpo_loss(sums[0], sums[1], sums[2], sums[3], 0.5, eps, "unbiased")
    flipped, _, _ = robust_dpo_loss(sums[1], sums[0], sums[3], sums[2], 0.5, eps, "unbiased")  # chosen and rejected swapped
    clean, _, _ = robust_dpo_loss(sums[0], sums[1], sums[2], sums[3], 0.5, 0.0)
    torch.testing.assert_close((1 - eps) * as_labelled + eps * flipped, clean, atol=1e-9, rtol=0)


def test_the_conservative_loss_stops_pushing_where_sigmoid_of_the_margin_is_one_minus_eps():
    eps, beta = 0.2, 0.5
    margin = math.log((1 - eps) / eps) / beta  # sigmoid(beta * margin) = 1 - eps
    policy_chosen = torch.tensor([margin], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    losses, _, _ = robust_dpo_loss(policy_chosen, zero, zero, zero, beta, eps, "conservative")
    losses.sum().backward()
    assert abs(policy_chosen.grad.item()) < 1e-12
    policy_chosen.grad = None
    dpo, _, _ = robust_dpo_loss(policy_chosen, zero, zero, zero, beta, 0.0)
    dpo.sum().backward()
    assert policy_chosen.grad.item() == pytest.approx(-beta * eps)  # DPO still pushes: -beta * sigmoid(-z)


def test_gradient_reaches_response_tokens_only():
    case = tiny_case()
    policy_logps = case.policy_logps.clone().requires_grad_()
    RobustDPO(estimator="unbiased")(objective_inputs(case, policy_logps=policy_logps)).loss.backward()
    assert torch.equal(policy_logps.grad != 0, case.response_mask)


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"),
    ({"label_smoothing": 0.5}, r"method.label_smoothing must be in \[0, 0.5\), got 0.5"),
    ({"label_smoothing": -0.1}, r"method.label_smoothing must be in \[0, 0.5\), got -0.1"),
    ({"estimator": "biased"}, r"method.estimator must be one of 'conservative', 'unbiased', got 'biased'"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RobustDPO(**kwargs)
