"""SFT and the chosen-NLL term (``sft_weight``) of the preference objectives, on the tiny case (see objective_cases)."""

from __future__ import annotations

import pytest
import torch

from selalign.logprobs import label_logprobs
from selalign.objectives import DPO, DPOKD, SFT, ObjectiveInputs, SelectiveDPO, chosen_nll

from support.objective_cases import objective_inputs, tiny_case

PREFERENCE_OBJECTIVES = {
    "dpo": lambda sft_weight: DPO(beta=0.1, sft_weight=sft_weight),
    "selective_dpo": lambda sft_weight: SelectiveDPO(beta=0.1, ratio=0.5, sft_weight=sft_weight),
    "dpo_kd": lambda sft_weight: DPOKD(beta=0.1, kd_weight=0.5, sft_weight=sft_weight),
}


def test_sft_is_the_chosen_nll_by_hand():
    case = tiny_case()
    output = SFT()(objective_inputs(case))
    assert output.loss.item() == pytest.approx(case.chosen_nll)  # -(-1 - 2) / 2 tokens
    assert output.metrics == {"loss": output.loss, "nll/chosen": output.loss, "logps/chosen": torch.tensor(-3.0)}
    assert not SFT().needs_reference and not SFT().needs_teacher


def test_chosen_nll_averages_tokens_within_a_response_then_responses_within_the_batch():
    logps = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -1.0, -1.0, -4.0]])
    mask = torch.tensor([[False, True, True, False], [False, True, True, True]])
    torch.testing.assert_close(chosen_nll(logps, mask), torch.tensor([1.5, 2.0]))
    rows = torch.cat([logps, torch.full_like(logps, -5.0)])  # [chosen; rejected]
    output = SFT()(ObjectiveInputs(policy_logps=rows, response_mask=torch.cat([mask, mask])))
    assert output.loss.item() == pytest.approx((1.5 + 2.0) / 2)
    assert output.metrics["logps/chosen"].item() == pytest.approx((-3.0 + -6.0) / 2)


def test_chosen_nll_of_an_empty_response_is_zero():
    assert chosen_nll(torch.tensor([[0.0, -3.0]]), torch.tensor([[False, False]])).item() == 0.0


def test_sft_ignores_prompt_padding_and_rejected_rows():
    case = tiny_case()
    changed = case.policy_logps.clone()
    changed[0, [0, 1, 4]] = -7.0
    changed[1] = -7.0
    assert torch.equal(SFT()(objective_inputs(case, policy_logps=changed)).loss, SFT()(objective_inputs(case)).loss)


def test_sft_gradient_reaches_policy_logits_only_where_they_predict_chosen_response_tokens():
    case = tiny_case()
    policy_logits = case.policy_logits.clone().requires_grad_()
    SFT()(objective_inputs(case, policy_logps=label_logprobs(policy_logits, case.input_ids))).loss.backward()
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, [1, 2]] = True
    assert torch.equal(policy_logits.grad.abs().sum(dim=-1) > 0, expected)


@pytest.mark.parametrize("name", PREFERENCE_OBJECTIVES)
def test_sft_weight_adds_exactly_that_times_the_chosen_nll(name):
    case = tiny_case()
    without = PREFERENCE_OBJECTIVES[name](0.0)(objective_inputs(case))
    with_nll = PREFERENCE_OBJECTIVES[name](0.7)(objective_inputs(case))
    torch.testing.assert_close(with_nll.losses, without.losses + 0.7 * case.chosen_nll)
    torch.testing.assert_close(with_nll.loss, without.loss + 0.7 * case.chosen_nll)
    assert "nll/chosen" not in without.metrics
    assert with_nll.metrics["nll/chosen"].item() == pytest.approx(case.chosen_nll)
    assert {k: v for k, v in with_nll.metrics.items() if k not in ("loss", "nll/chosen")} == {k: v for k, v in without.metrics.items() if k != "loss"}


@pytest.mark.parametrize("name", PREFERENCE_OBJECTIVES)
def test_sft_weight_ignores_prompt_and_padding(name):
    case = tiny_case()
    policy_logps, ref_logps = case.policy_logps.clone(), case.ref_logps.clone()
    for logps in (policy_logps, ref_logps):
        logps[0, [0, 1, 4]] = -7.0
        logps[1, [0, 1]] = -7.0
    objective = PREFERENCE_OBJECTIVES[name](0.7)
    changed = objective(objective_inputs(case, policy_logps=policy_logps, ref_logps=ref_logps))
    assert torch.equal(changed.loss, objective(objective_inputs(case)).loss)


@pytest.mark.parametrize("name", PREFERENCE_OBJECTIVES)
def test_negative_sft_weight_is_refused(name):
    with pytest.raises(ValueError, match="method.sft_weight"):
        PREFERENCE_OBJECTIVES[name](-0.1)
