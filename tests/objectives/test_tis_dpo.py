"""TIS-DPO: bounded, normalised token weights and the weighted DPO loss on the tiny case (see objective_cases)."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.objectives import DPO, ObjectiveInputs, TISDPO, TokenEvidence, tis_weights
from selalign.scoring import Scorer

from support.objective_cases import objective_inputs, random_pairs, tiny_case


class ConstantScore(Scorer):
    """Every token scores the same: the uniform-weight limit."""

    def __call__(self, evidence: TokenEvidence) -> torch.Tensor:
        return torch.full_like(evidence.policy, 0.3)


def test_weights_by_hand_are_clamped_exponentials_with_mean_one():
    scores = torch.tensor([[9.0, 0.5, -2.0, 3.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True, False]])
    weights = tis_weights(scores, mask, lower=-1.0, upper=1.0, mu=1.0)
    raw = [math.exp(0.5), math.exp(-1.0), math.exp(1.0)]  # clamped to -1 and 1
    expected = [0.0] + [3 * r / sum(raw) for r in raw] + [0.0]
    torch.testing.assert_close(weights, torch.tensor([expected], dtype=torch.float64), atol=1e-12, rtol=0)


def test_weights_are_bounded_and_normalised_per_response():
    generator = torch.Generator().manual_seed(1)
    scores = 4 * torch.randn(6, 20, generator=generator, dtype=torch.float64)
    _, _, mask = random_pairs(pairs=3, length=20)
    weights = tis_weights(scores, mask, lower=-0.5, upper=1.5, mu=2.0)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1) / mask.sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-12, rtol=0)
    for row, row_mask in zip(weights, mask):
        assert row[row_mask].max() / row[row_mask].min() <= math.exp(2.0 * 2.0) * (1 + 1e-12)


def test_tis_dpo_by_hand_with_the_reference_score():
    case = tiny_case()
    # logp_diff scores: chosen ref - policy = [-0.5, 0.5]; rejected policy - ref = [-1, 1, -1].
    chosen_raw, rejected_raw = [math.exp(-0.5), math.exp(0.5)], [math.exp(-1), math.exp(1), math.exp(-1)]
    chosen_w = [2 * r / sum(chosen_raw) for r in chosen_raw]
    rejected_w = [3 * r / sum(rejected_raw) for r in rejected_raw]
    chosen_ratio = chosen_w[0] * (-1 - -1.5) + chosen_w[1] * (-2 - -1.5)
    rejected_ratio = rejected_w[0] * (-3 - -2) + rejected_w[1] * (-1 - -2) + rejected_w[2] * (-2 - -1)
    output = TISDPO(beta=0.5, lower=-1.0, upper=1.0)(objective_inputs(case))
    assert output.loss.item() == pytest.approx(math.log(1 + math.exp(-0.5 * (chosen_ratio - rejected_ratio))), rel=1e-6)
    assert output.metrics["rewards/chosen"].item() == pytest.approx(0.5 * chosen_ratio, rel=1e-6)
    assert output.metrics["rewards/rejected"].item() == pytest.approx(0.5 * rejected_ratio, rel=1e-6)
    assert output.metrics["rewards_all/margins"].item() == pytest.approx(0.5 * case.dpo_margin)
    assert output.metrics["weights/max"].item() == pytest.approx(rejected_w[1], rel=1e-6)
    assert output.metrics["weights/min"].item() == pytest.approx(rejected_w[0], rel=1e-6)


def test_uniform_weights_are_dpo_in_float64():
    policy, ref, mask = random_pairs()
    inputs = ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref)
    tis = TISDPO(beta=0.3, scorer=ConstantScore())(inputs)
    dpo = DPO(beta=0.3)(inputs)
    torch.testing.assert_close(tis.losses, dpo.losses, atol=1e-9, rtol=0)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert tis.metrics[name].item() == pytest.approx(dpo.metrics[name].item(), abs=1e-9)
    assert tis.metrics["weights/min"].item() == tis.metrics["weights/max"].item() == 1.0


def test_weights_carry_no_gradient_and_each_token_gets_its_weight():
    case = tiny_case()
    policy_logps = case.policy_logps.clone().requires_grad_()
    objective = TISDPO(beta=0.5)
    output = objective(objective_inputs(case, policy_logps=policy_logps))
    output.loss.backward()
    _, weights = objective.weights(objective_inputs(case))
    # d loss / d log pi(y_t) = -beta * sigmoid(-z) * w_t on the chosen row and +beta * sigmoid(-z) * w_t on the rejected one.
    z = output.metrics["rewards/margins"].item()
    factor = 0.5 / (1 + math.exp(z))
    expected = torch.cat([-factor * weights[:1], factor * weights[1:]])
    torch.testing.assert_close(policy_logps.grad, expected, atol=1e-7, rtol=1e-6)
    assert torch.equal(policy_logps.grad != 0, case.response_mask)


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"),
    ({"lower": 1.0, "upper": 1.0}, r"method.lower must be below method.upper, got lower=1.0 and upper=1.0"),
    ({"mu": 0.0}, r"method.mu must be > 0, got 0.0"),
    ({"upper": "high"}, r"method.upper must be a number, got 'high' \(str\)"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TISDPO(**kwargs)
