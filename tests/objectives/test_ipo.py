"""IPO on the hand-checkable tiny case (see objective_cases) and its ties to DPO."""

from __future__ import annotations

import pytest
import torch

from selalign.objectives import DPO, IPO, ObjectiveInputs, dpo_loss, ipo_loss

from support.objective_cases import objective_inputs, random_pairs, tiny_case

# The tiny case by hand: policy chosen [-1, -2], rejected [-3, -1, -2]; reference chosen [-1.5, -1.5], rejected [-2, -2, -1].
# Means: policy -1.5 / -2, reference -1.5 / -5/3. Sums: policy -3 / -6, reference -3 / -5.


def test_length_averaged_ipo_by_hand():
    output = IPO(beta=0.5)(objective_inputs(tiny_case()))
    chosen_logratio, rejected_logratio = -1.5 - -1.5, -2.0 - -5 / 3
    h = chosen_logratio - rejected_logratio  # 1/3
    assert output.loss.item() == pytest.approx((h - 1 / (2 * 0.5)) ** 2)  # (1/3 - 1)^2 = 4/9
    assert output.metrics["rewards/chosen"].item() == pytest.approx(0.5 * chosen_logratio, abs=1e-7)
    assert output.metrics["rewards/rejected"].item() == pytest.approx(0.5 * rejected_logratio)
    assert output.metrics["logps/chosen"].item() == pytest.approx(-3.0)  # summed, as for every method
    assert output.metrics["logps/rejected"].item() == pytest.approx(-6.0)


def test_summed_ipo_by_hand_reads_dpos_margin():
    case = tiny_case()
    output = IPO(beta=0.25, length_average=False)(objective_inputs(case))
    assert output.loss.item() == pytest.approx((case.dpo_margin - 1 / (2 * 0.25)) ** 2)  # (1 - 2)^2
    dpo = DPO(beta=0.25)(objective_inputs(case))
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert torch.equal(output.metrics[name], dpo.metrics[name]), name


def test_summed_ipo_is_the_squared_loss_on_dpos_margin_in_float64():
    policy, ref, mask = random_pairs()
    b = policy.shape[0] // 2
    sums = [(values[rows] * mask[rows]).sum(-1) for values in (policy, ref) for rows in (slice(None, b), slice(b, None))]
    _, dpo_chosen, dpo_rejected = dpo_loss(sums[0], sums[1], sums[2], sums[3], beta=0.3)
    margin = (dpo_chosen - dpo_rejected) / 0.3
    output = IPO(beta=0.3, length_average=False)(ObjectiveInputs(policy_logps=policy, response_mask=mask, ref_logps=ref))
    torch.testing.assert_close(output.losses, (margin - 1 / 0.6) ** 2, atol=1e-9, rtol=0)


def test_gradient_vanishes_at_the_target_margin_where_dpos_does_not():
    case = tiny_case()  # summed margin h = 1 = 1 / (2 beta) for beta = 0.5
    gradients = {}
    for name, objective in (("ipo", IPO(beta=0.5, length_average=False)), ("dpo", DPO(beta=0.5))):
        policy_logps = case.policy_logps.clone().requires_grad_()
        output = objective(objective_inputs(case, policy_logps=policy_logps))
        output.loss.backward()
        gradients[name] = policy_logps.grad
    assert torch.count_nonzero(gradients["ipo"]) == 0
    assert torch.count_nonzero(gradients["dpo"]) == 5  # every response token
    # Beyond the target IPO pulls the margin back: at h = 1.5 the loss grows with the chosen log-prob, d/d pi_w = 2 (h - 1).
    policy_chosen = torch.tensor([0.5], requires_grad=True)
    losses, _, _ = ipo_loss(policy_chosen, torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=0.5)
    losses.sum().backward()
    assert losses.item() == pytest.approx(0.25) and policy_chosen.grad.item() == pytest.approx(1.0)


def test_gradient_reaches_response_tokens_only_and_prompt_and_padding_never_count():
    case = tiny_case()
    policy_logps = case.policy_logps.clone().requires_grad_()
    output = IPO(beta=0.1)(objective_inputs(case, policy_logps=policy_logps))
    output.loss.backward()
    assert torch.equal(policy_logps.grad != 0, case.response_mask)
    changed_policy, changed_ref = case.policy_logps.clone(), case.ref_logps.clone()
    for logps in (changed_policy, changed_ref):
        logps[~case.response_mask] = -7.0
    changed = IPO(beta=0.1)(objective_inputs(case, policy_logps=changed_policy, ref_logps=changed_ref))
    assert torch.equal(changed.loss, output.loss.detach())


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"),
    ({"beta": "x"}, r"method.beta must be a number, got 'x' \(str\)"),
    ({"length_average": "yes"}, r"method.length_average must be true or false, got 'yes'"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IPO(**kwargs)
