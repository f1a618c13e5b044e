import math

import pytest
import torch

from selalign.objectives import DPO, ObjectiveInputs, SelectiveDPO, TokenEvidence, dpo_loss, select_tokens, selective_dpo_loss
from selalign.scoring import AbsDiff, LogpDiff, Oracle, RandomScore


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
    inputs = ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref)
    scores, selected = select_tokens(inputs, LogpDiff(), ratio=1.0)
    assert torch.equal(selected, mask)
    selective = selective_dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], selected[:b], selected[b:], beta=0.1)
    plain = dpo_loss((policy[:b] * mask[:b]).sum(-1), (policy[b:] * mask[b:]).sum(-1), (ref[:b] * mask[:b]).sum(-1), (ref[b:] * mask[b:]).sum(-1), beta=0.1)
    for got, expected in zip(selective, plain):
        assert torch.allclose(got, expected, atol=1e-9, rtol=0)
    output = SelectiveDPO(beta=0.1, ratio=1.0)(inputs)
    assert abs(output.loss.item() - DPO(beta=0.1)(inputs).loss.item()) < 1e-9
    for name in ("chosen", "rejected", "margins", "accuracies"):  # every token selected: the two reward views agree
        assert output.metrics[f"rewards_all/{name}"].item() == pytest.approx(output.metrics[f"rewards/{name}"].item(), abs=1e-9)


def test_selective_dpo_hand_computed_selection_and_loss():
    # One pair, 4 response tokens each. Chosen scores (ref - policy): [0.5, -1, 2, 0]; rejected (policy - ref): [1, 3, -2, 0].
    policy_chosen = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    ref_chosen = torch.tensor([[-0.5, -2.0, 1.0, -1.0]])
    policy_rejected = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    ref_rejected = torch.tensor([[-2.0, -4.0, 1.0, -1.0]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    inputs = ObjectiveInputs(policy_logps=torch.cat([policy_chosen, policy_rejected]), response_mask=mask, ref_logps=torch.cat([ref_chosen, ref_rejected]))
    _, selected = select_tokens(inputs, LogpDiff(), ratio=0.5)
    chosen_sel, rejected_sel = selected[:1], selected[1:]
    losses, chosen_rewards, rejected_rewards = selective_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_sel, rejected_sel, beta=1.0)
    # 0.5 quantile of [-1, 0, 0.5, 2] is 0.25: keep scores 0.5 and 2; of [-2, 0, 1, 3] is 0.5: keep 1 and 3.
    assert chosen_sel.tolist() == [[True, False, True, False]]
    assert rejected_sel.tolist() == [[True, True, False, False]]
    chosen_logratio = (-1 - 1) - (-0.5 + 1.0)  # -2.5
    rejected_logratio = (-1 - 1) - (-2.0 - 4.0)  # 4.0
    assert chosen_rewards.item() == pytest.approx(chosen_logratio)
    assert rejected_rewards.item() == pytest.approx(rejected_logratio)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-(chosen_logratio - rejected_logratio))))
    # Over every token: chosen (-4) - (-2.5) = -1.5, rejected (-4) - (-6) = 2; the selection's chosen reward -2.5 < 4.
    output = SelectiveDPO(beta=1.0, ratio=0.5)(inputs)
    assert output.metrics["rewards_all/chosen"].item() == pytest.approx(-1.5)
    assert output.metrics["rewards_all/rejected"].item() == pytest.approx(2.0)
    assert output.metrics["rewards/accuracies"].item() == 0.0 and output.metrics["rewards_all/accuracies"].item() == 0.0


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


def evidence(chosen: bool, **fields) -> TokenEvidence:
    policy = torch.tensor([[-1.0, -3.0]])
    return TokenEvidence(chosen=chosen, policy=policy, mask=torch.ones(1, 2, dtype=torch.bool), **fields)


def test_scorers():
    selector = torch.tensor([[-2.0, -1.0]])
    assert LogpDiff()(evidence(True, selector=selector)).tolist() == [[-1.0, 2.0]]
    assert LogpDiff()(evidence(False, selector=selector)).tolist() == [[1.0, -2.0]]
    assert AbsDiff()(evidence(False, selector=selector)).tolist() == [[1.0, 2.0]]
    first, second = RandomScore(seed=3)(evidence(True)), RandomScore(seed=3)(evidence(True))
    assert torch.equal(first, second) and ((first >= 0) & (first < 1)).all()


def test_the_selector_feeds_the_scores_and_the_reference_anchors_the_loss():
    # Same policy and reference; two selectors that disagree: the selection follows the selector, the loss the reference.
    policy = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-4.0, -3.0, -2.0, -1.0]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    likes_first = torch.tensor([[0.0, -5.0, -5.0, -5.0], [-5.0, -5.0, -5.0, 0.0]])  # chosen: token 0 scores high; rejected: token 3 scores low
    likes_last = torch.tensor([[-5.0, -5.0, -5.0, 0.0], [0.0, -5.0, -5.0, -5.0]])
    objective = SelectiveDPO(beta=1.0, ratio=0.25)
    first = objective(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref, selector_logps=likes_first))
    last = objective(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref, selector_logps=likes_last))
    # chosen scores selector - policy; rejected policy - selector: the top quarter is one token per row.
    assert first.selected[0].tolist() == [True, False, False, False] and last.selected[0].tolist() == [False, False, False, True]
    # The anchor is the reference: chosen reward over token 0 is (-1) - (-1) = 0, over token 3 it is (-1) - (-4) = 3.
    assert first.metrics["rewards/chosen"].item() == pytest.approx(0.0)
    assert last.metrics["rewards/chosen"].item() == pytest.approx(3.0)
    # Without a selector the reference selects: chosen scores ref - policy = [0, -1, -2, -3], the top token is 0.
    by_reference = objective(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref))
    assert by_reference.selected[0].tolist() == [True, False, False, False]


def test_oracle_selects_exactly_the_decisive_tokens_whatever_the_ratio():
    policy, ref, mask = random_batch(pairs=3, length=10, dtype=torch.float32)
    decisive = mask & (torch.arange(10) % 4 == 1)
    for ratio in (0.1, 0.4, 1.0):
        output = SelectiveDPO(ratio=ratio, scorer=Oracle())(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref, decisive_mask=decisive))
        assert torch.equal(output.selected, decisive)
    with pytest.raises(ValueError, match="scorer=oracle needs data that marks decisive tokens"):
        SelectiveDPO(scorer=Oracle())(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref))


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"), ({"ratio": 0.0}, r"method.ratio must be in \(0, 1\], got 0.0"),
    ({"ratio": 1.5}, r"method.ratio must be in \(0, 1\], got 1.5"), ({"ratio": "abc"}, r"method.ratio must be a number, got 'abc' \(str\)"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectiveDPO(**kwargs)
