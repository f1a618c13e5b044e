"""DPO with teacher distillation on the tiny case (see objective_cases)."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.logprobs import label_logprobs
from selalign.objectives import DPO, DPOKD

from support.objective_cases import noise, objective_inputs, tiny_case


def test_dpo_kd_is_dpo_plus_kd_weight_times_the_token_mean_kl_by_hand():
    case = tiny_case()
    output = DPOKD(beta=0.1, kd_weight=0.5)(objective_inputs(case))
    dpo = math.log(1 + math.exp(-0.1 * case.dpo_margin))  # -log sigmoid(beta * margin)
    assert output.loss.item() == pytest.approx(dpo + 0.5 * case.kl_mean, rel=1e-5)
    assert output.metrics["distill/kl"].item() == pytest.approx(case.kl_mean, rel=1e-5)
    assert output.metrics["rewards/chosen"].item() == pytest.approx(0.1 * (-3.0 - -3.0))
    assert output.metrics["rewards/rejected"].item() == pytest.approx(0.1 * (-6.0 - -5.0))
    assert output.metrics["logps/rejected"].item() == pytest.approx(-6.0)


@pytest.mark.parametrize("sft_weight", [0.0, 0.7])
def test_dpo_kd_without_kd_weight_is_exactly_dpo(sft_weight):
    case = tiny_case()
    dpo = DPO(beta=0.1, sft_weight=sft_weight)(objective_inputs(case))
    dpo_kd = DPOKD(beta=0.1, kd_weight=0.0, sft_weight=sft_weight)(objective_inputs(case))
    assert torch.equal(dpo_kd.loss, dpo.loss) and torch.equal(dpo_kd.losses, dpo.losses)
    assert dpo_kd.metrics.keys() - dpo.metrics.keys() == {"distill/kl"}
    assert all(torch.equal(dpo_kd.metrics[name], value) for name, value in dpo.metrics.items())


def test_prompt_and_padding_never_contribute():
    case = tiny_case()
    objective = DPOKD(beta=0.1, kd_weight=0.5, temperature=2.0)
    policy_logits, teacher_logits = case.policy_logits.clone(), case.teacher_logits.clone()
    policy_logps, ref_logps = case.policy_logps.clone(), case.ref_logps.clone()
    policy_logits[0, [0, 3, 4]] = noise(3, 3)
    teacher_logits[0, [0, 3, 4]] = noise(3, 3)
    for logps in (policy_logps, ref_logps):
        logps[0, [0, 1, 4]] = -7.0
        logps[1, [0, 1]] = -7.0
    changed = objective(objective_inputs(case, policy_logits=policy_logits, teacher_logits=teacher_logits, policy_logps=policy_logps, ref_logps=ref_logps))
    reference = objective(objective_inputs(case))
    assert torch.equal(changed.loss, reference.loss)
    assert all(torch.equal(changed.metrics[name], value) for name, value in reference.metrics.items())


def test_gradient_reaches_policy_logits_only_where_they_predict_response_tokens():
    case = tiny_case()
    policy_logits = case.policy_logits.clone().requires_grad_()
    policy_logps = label_logprobs(policy_logits, case.input_ids)
    DPOKD(beta=0.1, kd_weight=0.5)(objective_inputs(case, policy_logits=policy_logits, policy_logps=policy_logps)).loss.backward()
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, [1, 2]] = True     # chosen response tokens 2, 3 (DPO and KL)
    expected[1, [1, 2, 3]] = True  # rejected response tokens 2, 3, 4 (DPO)
    assert torch.equal(policy_logits.grad.abs().sum(dim=-1) > 0, expected)


def test_dpo_kd_runs_reference_and_teacher():
    assert DPOKD().needs_reference and DPOKD().needs_teacher


@pytest.mark.parametrize("knobs", [{"kd_weight": -0.1}, {"temperature": 0.0}, {"beta": 0.0}])
def test_invalid_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match="method\\."):
        DPOKD(**knobs)
