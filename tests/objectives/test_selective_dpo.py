import math

import pytest
import torch

from selalign.objectives import DPO, ObjectiveInputs, SelectiveDPO, dpo_loss, selective_dpo_loss
from selalign.scoring import AbsDiff, LogpDiff, RandomScore


def random_batch(pairs=4, length=12, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    policy = -torch.rand(2 * pairs, length, generator=generator, dtype=dtype) * 5
    ref = -torch.rand(2 * pairs, length, generator=generator, dtype=dtype) * 5
    mask = torch.zeros(2 * pairs, length, dtype=torch.bool)
    for row in range(2 * pairs):
        start = 2 + row % 3
        mask[row, start : length - row % 4] = True
    return policy, ref, mask


def test_dpo_loss_hand_computed():
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]), beta=0.5
    )
    # chosen log-ratio 1.0, rejected -0.5; margin 0.5 * 1.5 = 0.75
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.75))))
    assert chosen_rewards.item() == pytest.approx(0.5)
    assert rejected_rewards.item() == pytest.approx(-0.25)


def test_selective_dpo_equals_dpo_at_ratio_one_in_float64():
    policy, ref, mask = random_batch()
    b = policy.shape[0] // 2
    selective = selective_dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], mask[:b], mask[b:], beta=0.1, ratio=1.0)
    plain = dpo_loss((policy[:b] * mask[:b]).sum(-1), (policy[b:] * mask[b:]).sum(-1), (ref[:b] * mask[:b]).sum(-1), (ref[b:] * mask[b:]).sum(-1), beta=0.1)
    for got, expected in zip(selective[:3], plain):
        assert torch.allclose(got, expected, atol=1e-9, rtol=0)
    assert torch.equal(selective[3], mask[:b]) and torch.equal(selective[4], mask[b:])

    inputs = ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref)
    assert abs(SelectiveDPO(beta=0.1, ratio=1.0)(inputs).loss.item() - DPO(beta=0.1)(inputs).loss.item()) < 1e-9


def test_selective_dpo_hand_computed_selection_and_loss():
    # One pair, 4 response tokens each. Chosen scores (ref - policy): [0.5, -1, 2, 0]; rejected (policy - ref): [1, 3, -2, 0].
    policy_chosen = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    ref_chosen = torch.tensor([[-0.5, -2.0, 1.0, -1.0]])
    policy_rejected = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    ref_rejected = torch.tensor([[-2.0, -4.0, 1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    losses, chosen_rewards, rejected_rewards, chosen_sel, rejected_sel = selective_dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, mask, mask, beta=1.0, ratio=0.5
    )
    # 0.5 quantile of [-1, 0, 0.5, 2] is 0.25: keep scores 0.5 and 2; of [-2, 0, 1, 3] is 0.5: keep 1 and 3.
    assert chosen_sel.tolist() == [[True, False, True, False]]
    assert rejected_sel.tolist() == [[True, True, False, False]]
    chosen_logratio = (-1 - 1) - (-0.5 + 1.0)  # -2.5
    rejected_logratio = (-1 - 1) - (-2.0 - 4.0)  # 4.0
    assert chosen_rewards.item() == pytest.approx(chosen_logratio)
    assert rejected_rewards.item() == pytest.approx(rejected_logratio)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-(chosen_logratio - rejected_logratio))))


def test_gradient_reaches_only_selected_tokens():
    policy, ref, mask = random_batch(dtype=torch.float32)
    policy.requires_grad_(True)
    output = SelectiveDPO(beta=0.1, ratio=0.4)(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref))
    output.loss.backward()
    carries_gradient = policy.grad != 0
    assert torch.equal(carries_gradient, output.selected)
    assert output.selected.sum() < mask.sum()


def test_selection_metrics_and_kept_fractions():
    policy, ref, mask = random_batch(pairs=8, length=40, dtype=torch.float32)
    output = SelectiveDPO(beta=0.1, ratio=0.4)(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref))
    b = 8
    assert output.metrics["selection/kept_chosen"].item() == pytest.approx(output.selected[:b].sum().item() / mask[:b].sum().item())
    assert 0.38 < output.metrics["selection/kept_chosen"].item() < 0.5
    assert output.metrics["selection/score_kept"] > output.metrics["selection/score_dropped"]
    expected_keys = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                     "selection/kept_chosen", "selection/kept_rejected", "selection/score_kept", "selection/score_dropped"}
    assert expected_keys <= set(output.metrics)


def test_scorers():
    policy = torch.tensor([[-1.0, -3.0]])
    ref = torch.tensor([[-2.0, -1.0]])
    assert LogpDiff()(policy, ref, chosen=True).tolist() == [[-1.0, 2.0]]
    assert LogpDiff()(policy, ref, chosen=False).tolist() == [[1.0, -2.0]]
    assert AbsDiff()(policy, ref, chosen=False).tolist() == [[1.0, 2.0]]
    first, second = RandomScore(seed=3)(policy, ref, chosen=True), RandomScore(seed=3)(policy, ref, chosen=True)
    assert torch.equal(first, second) and ((first >= 0) & (first < 1)).all()


@pytest.mark.parametrize("kwargs, message", [({"beta": 0.0}, "method.beta must be > 0"), ({"ratio": 0.0}, r"selection.ratio must be in \(0, 1\]"), ({"ratio": 1.5}, r"selection.ratio must be in \(0, 1\]")])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectiveDPO(**kwargs)
