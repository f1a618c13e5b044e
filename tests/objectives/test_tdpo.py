"""TDPO on the hand-checkable tiny case (see objective_cases): the sequential KL by hand, TDPO1, TDPO2, and the ties to DPO."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.logprobs import label_logprobs
from selalign.module import frozen_roles
from selalign.objectives import DPO, TDPO

from support.objective_cases import REFERENCE_REJECTED_PROBS, TEACHER_PROBS, noise, objective_inputs, tiny_case

# Logits of the case's rejected policy row that predict its response tokens 2, 3, 4 (positions 1, 2, 3).
POLICY_REJECTED_LOGITS = [[0.5, -0.5, 0.0], [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
# The chosen policy row predicts tokens 2, 3 uniformly, then with probabilities [0.25, 0.25, 0.5].
POLICY_CHOSEN_PROBS = [[1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]]


def softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(x) for x in logits)
    return [math.exp(x) / total for x in logits]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# D_SeqKL(pi_ref || pi_theta) of each response, by hand: the reference of the chosen row is the teacher's distributions.
SEQ_KL_CHOSEN = sum(kl(ref, policy) for ref, policy in zip(TEACHER_PROBS, POLICY_CHOSEN_PROBS))
SEQ_KL_REJECTED = sum(kl(ref, softmax(logits)) for ref, logits in zip(REFERENCE_REJECTED_PROBS, POLICY_REJECTED_LOGITS))


def nll_of_sigmoid(z: float) -> float:
    return math.log(1 + math.exp(-z))


def test_sequential_kl_matches_the_hand_computation():
    output = TDPO()(objective_inputs(tiny_case()))
    assert output.metrics["kl/chosen"].item() == pytest.approx(SEQ_KL_CHOSEN, rel=1e-5)
    assert output.metrics["kl/rejected"].item() == pytest.approx(SEQ_KL_REJECTED, rel=1e-5)
    assert output.metrics["kl/margin"].item() == pytest.approx(SEQ_KL_CHOSEN - SEQ_KL_REJECTED, rel=1e-5)


def test_tdpo1_and_tdpo2_losses_by_hand():
    case = tiny_case()  # DPO's summed margin is 1
    tdpo1 = TDPO(beta=0.5, variant="tdpo1")(objective_inputs(case))
    assert tdpo1.loss.item() == pytest.approx(nll_of_sigmoid(0.5 * (1 - (SEQ_KL_REJECTED - SEQ_KL_CHOSEN))), rel=1e-5)
    tdpo2 = TDPO(beta=0.5, alpha=0.3)(objective_inputs(case))
    assert tdpo2.loss.item() == pytest.approx(nll_of_sigmoid(0.5 * (1 - 0.3 * (SEQ_KL_REJECTED - SEQ_KL_CHOSEN))), rel=1e-5)
    dpo = DPO(beta=0.5)(objective_inputs(case))
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert torch.equal(tdpo2.metrics[name], dpo.metrics[name]), name


def test_tdpo2_without_the_kl_term_is_dpo():
    case = tiny_case()
    policy_logps = {name: case.policy_logps.clone().requires_grad_() for name in ("tdpo", "dpo")}
    tdpo = TDPO(beta=0.5, alpha=0.0)(objective_inputs(case, policy_logps=policy_logps["tdpo"]))
    dpo = DPO(beta=0.5)(objective_inputs(case, policy_logps=policy_logps["dpo"]))
    assert torch.equal(tdpo.losses, dpo.losses)
    tdpo.loss.backward()
    dpo.loss.backward()
    assert torch.equal(policy_logps["tdpo"].grad, policy_logps["dpo"].grad)


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_a_policy_at_the_reference_gets_dpos_loss_and_gradient(variant):
    case = tiny_case()
    gradients, losses = {}, {}
    for name, objective in (("tdpo", TDPO(beta=0.5, variant=variant)), ("dpo", DPO(beta=0.5))):
        policy_logits = case.reference_logits.clone().requires_grad_()
        policy_logps = label_logprobs(policy_logits, case.input_ids)
        ref_logps = label_logprobs(case.reference_logits, case.input_ids)
        output = objective(objective_inputs(case, policy_logits=policy_logits, policy_logps=policy_logps, ref_logps=ref_logps))
        output.loss.backward()
        losses[name], gradients[name] = output.loss.item(), policy_logits.grad
    assert losses["tdpo"] == pytest.approx(losses["dpo"], abs=1e-6)
    torch.testing.assert_close(gradients["tdpo"], gradients["dpo"], atol=1e-6, rtol=0)


def test_tdpo1_equals_tdpo2_at_alpha_one_in_value_but_tdpo2_trains_only_through_the_rejected_kl():
    case = tiny_case()
    results = {}
    for variant in ("tdpo1", "tdpo2"):
        policy_logits = case.policy_logits.clone().requires_grad_()
        output = TDPO(beta=0.5, alpha=1.0, variant=variant)(objective_inputs(case, policy_logits=policy_logits))
        output.loss.backward()
        results[variant] = (output.loss.item(), policy_logits.grad[0])  # the chosen row's logits
    assert results["tdpo1"][0] == pytest.approx(results["tdpo2"][0])
    # With policy_logps held fixed, TDPO2's chosen-row gradient through the logits is the KL's, which sg removes.
    assert torch.count_nonzero(results["tdpo2"][1]) == 0
    assert torch.count_nonzero(results["tdpo1"][1]) > 0


def test_tdpo2_chosen_gradient_is_dpos_direction_scaled_by_the_tdpo_sigmoid():
    case = tiny_case()
    policy_logits = case.policy_logits.clone().requires_grad_()
    policy_logps = label_logprobs(policy_logits, case.input_ids)
    output = TDPO(beta=0.5, alpha=0.3)(objective_inputs(case, policy_logits=policy_logits, policy_logps=policy_logps))
    output.loss.backward()
    # Independently: d loss / d log pi(y_w) = -beta * sigmoid(-z), times d (sum of chosen log-probs) / d logits.
    margin = output.metrics["rewards/margins"].item() / 0.5
    z = 0.5 * (margin - 0.3 * (output.metrics["kl/rejected"].item() - output.metrics["kl/chosen"].item()))
    logits = case.policy_logits.clone().requires_grad_()
    (label_logprobs(logits, case.input_ids)[0, 2:4].sum()).backward()
    torch.testing.assert_close(policy_logits.grad[0], -0.5 / (1 + math.exp(z)) * logits.grad[0], atol=1e-6, rtol=1e-5)


def test_gradient_reaches_policy_logits_only_where_they_predict_response_tokens():
    case = tiny_case()
    policy_logits = case.policy_logits.clone().requires_grad_()
    policy_logps = label_logprobs(policy_logits, case.input_ids)
    TDPO(variant="tdpo1")(objective_inputs(case, policy_logits=policy_logits, policy_logps=policy_logps)).loss.backward()
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, [1, 2]] = True     # chosen response tokens 2, 3
    expected[1, [1, 2, 3]] = True  # rejected response tokens 2, 3, 4
    assert torch.equal(policy_logits.grad.abs().sum(dim=-1) > 0, expected)


def test_prompt_and_padding_never_contribute():
    case = tiny_case()
    policy_logits, reference_logits = case.policy_logits.clone(), case.reference_logits.clone()
    policy_logps, ref_logps = case.policy_logps.clone(), case.ref_logps.clone()
    for logits in (policy_logits, reference_logits):
        logits[0, [0, 3, 4]] = noise(3, 3)  # predict the prompt, the padding, or nothing
        logits[1, [0, 4]] = noise(2, 3)
    for logps in (policy_logps, ref_logps):
        logps[~case.response_mask] = -7.0
    changed = TDPO(variant="tdpo1")(objective_inputs(case, policy_logits=policy_logits, reference_logits=reference_logits, policy_logps=policy_logps, ref_logps=ref_logps))
    reference = TDPO(variant="tdpo1")(objective_inputs(case))
    assert torch.equal(changed.loss, reference.loss)
    assert all(torch.equal(changed.metrics[name], value) for name, value in reference.metrics.items())


def test_tdpo_reads_the_reference_log_probs_and_both_distributions_on_all_rows():
    assert TDPO().needs_reference and TDPO().distributions == {"policy": "all", "reference": "all"}
    assert frozen_roles(TDPO(), has_selector=False) == {"reference": "all"}


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, r"method.beta must be > 0, got 0.0"),
    ({"alpha": -0.5}, r"method.alpha must be >= 0, got -0.5"),
    ({"variant": "tdpo3"}, r"method.variant must be one of 'tdpo1', 'tdpo2', got 'tdpo3'"),
])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TDPO(**kwargs)
