"""Forward KL, skew KL and the distillation objectives on the hand-checkable tiny case (see objective_cases)."""

from __future__ import annotations

import math

import pytest
import torch

from selalign.logprobs import label_logprobs
from selalign.objectives import DistillKD, DistillSKL, forward_kl_per_token, skew_kl_per_token

from support.objective_cases import STUDENT_PROBS, TEACHER_PROBS, noise, objective_inputs, tiny_case

RESPONSE_POSITIONS = [2, 3]


def hand_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def normalised(weights: list[float]) -> list[float]:
    return [w / sum(weights) for w in weights]


def chosen_kl_args(case):
    return case.teacher_logits, case.policy_logits[:1], case.response_mask[:1]


def only_at_response_positions(values: list[float]) -> torch.Tensor:
    expected = torch.zeros(1, 5)
    expected[0, RESPONSE_POSITIONS] = torch.tensor(values)
    return expected


def test_forward_kl_matches_hand_values_and_is_zero_off_the_response():
    case = tiny_case()
    kl = forward_kl_per_token(*chosen_kl_args(case))
    assert kl.dtype == torch.float32
    torch.testing.assert_close(kl, only_at_response_positions(case.kl_tokens))


def test_forward_kl_is_zero_when_teacher_is_student():
    case = tiny_case()
    student = noise(2, 5, 3)
    kl = forward_kl_per_token(student.clone(), student, case.response_mask, temperature=1.7)
    torch.testing.assert_close(kl, torch.zeros(2, 5), atol=1e-6, rtol=0)


def test_temperature_two_softens_both_distributions_and_scales_by_its_square():
    case = tiny_case()
    # softmax(log p / 2) is proportional to sqrt(p).
    expected = [
        4 * hand_kl(normalised([math.sqrt(p) for p in teacher]), normalised([math.sqrt(q) for q in student]))
        for teacher, student in zip(TEACHER_PROBS, STUDENT_PROBS)
    ]
    kl = forward_kl_per_token(*chosen_kl_args(case), temperature=2.0)
    torch.testing.assert_close(kl, only_at_response_positions(expected))


def test_temperature_squared_keeps_the_high_temperature_limit_finite():
    case = tiny_case()
    # As tau grows, tau^2 KL(softmax(a / tau) || softmax(b / tau)) -> Var_uniform(a - b) / 2, at a rate O(1 / tau);
    # without the tau^2 factor the term would vanish like 1 / tau^2.
    def half_variance(diffs):
        mean = sum(diffs) / 3
        return sum((d - mean) ** 2 for d in diffs) / 3 / 2

    expected = [
        half_variance([math.log(p) - math.log(q) for p, q in zip(teacher, student)])
        for teacher, student in zip(TEACHER_PROBS, STUDENT_PROBS)
    ]
    kl = forward_kl_per_token(*chosen_kl_args(case), temperature=20.0)
    torch.testing.assert_close(kl, only_at_response_positions(expected), rtol=2e-2, atol=0)


def test_skew_kl_matches_hand_values():
    case = tiny_case()
    expected = [
        hand_kl(teacher, [0.1 * p + 0.9 * q for p, q in zip(teacher, student)])
        for teacher, student in zip(TEACHER_PROBS, STUDENT_PROBS)
    ]
    torch.testing.assert_close(skew_kl_per_token(*chosen_kl_args(case), alpha=0.1), only_at_response_positions(expected))


def test_skew_kl_spans_forward_kl_at_alpha_zero_to_zero_at_alpha_one():
    case = tiny_case()
    args = chosen_kl_args(case)
    torch.testing.assert_close(skew_kl_per_token(*args, alpha=0.0), forward_kl_per_token(*args))
    torch.testing.assert_close(skew_kl_per_token(*args, alpha=1.0), torch.zeros(1, 5), atol=1e-7, rtol=0)


def test_vocabulary_sizes_must_match():
    case = tiny_case()
    with pytest.raises(ValueError, match="vocabulary"):
        forward_kl_per_token(torch.zeros(1, 5, 4), case.policy_logits[:1], case.response_mask[:1])


def test_distill_kd_mixes_kl_and_nll_by_kd_ratio():
    case = tiny_case()
    output = DistillKD(kd_ratio=0.3)(objective_inputs(case))
    expected = 0.3 * case.kl_mean + 0.7 * case.chosen_nll
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)
    assert output.losses.shape == (1,)
    assert set(output.metrics) == {"loss", "distill/kl", "nll/chosen"}
    assert output.metrics["distill/kl"].item() == pytest.approx(case.kl_mean, rel=1e-5)
    assert output.metrics["nll/chosen"].item() == pytest.approx(case.chosen_nll)


def test_distill_skl_mixes_skew_kl_and_nll_by_kd_ratio():
    case = tiny_case()
    skew = [hand_kl(t, [0.2 * p + 0.8 * q for p, q in zip(t, s)]) for t, s in zip(TEACHER_PROBS, STUDENT_PROBS)]
    skew_mean = (skew[0] + skew[1]) / 2
    output = DistillSKL(kd_ratio=0.3, alpha=0.2)(objective_inputs(case))
    assert output.loss.item() == pytest.approx(0.3 * skew_mean + 0.7 * case.chosen_nll, rel=1e-5)
    assert set(output.metrics) == {"loss", "distill/skew_kl", "nll/chosen"}
    assert output.metrics["distill/skew_kl"].item() == pytest.approx(skew_mean, rel=1e-5)


def test_kd_ratio_one_is_pure_kl_and_zero_pure_nll():
    case = tiny_case()
    assert DistillKD(kd_ratio=1.0)(objective_inputs(case)).loss.item() == pytest.approx(case.kl_mean, rel=1e-5)
    assert DistillKD(kd_ratio=0.0)(objective_inputs(case)).loss.item() == pytest.approx(case.chosen_nll)


@pytest.mark.parametrize("objective", [DistillKD(kd_ratio=0.5, temperature=2.0), DistillSKL(kd_ratio=0.5, alpha=0.1)])
def test_prompt_padding_and_rejected_rows_never_contribute(objective):
    case = tiny_case()
    reference = objective(objective_inputs(case))
    policy_logits, teacher_logits, policy_logps = case.policy_logits.clone(), case.teacher_logits.clone(), case.policy_logps.clone()
    for logits in (policy_logits[:1], teacher_logits):
        logits[:, [0, 3, 4]] = noise(1, 3, 3)  # predict the prompt, the padding, or nothing
    policy_logits[1:] = noise(1, 5, 3)
    policy_logps[0, [0, 1, 4]] = -7.0
    policy_logps[1:] = -7.0
    changed = objective(objective_inputs(case, policy_logits=policy_logits, teacher_logits=teacher_logits, policy_logps=policy_logps))
    assert torch.equal(changed.loss, reference.loss)
    assert changed.metrics.keys() == reference.metrics.keys()
    assert all(torch.equal(changed.metrics[name], value) for name, value in reference.metrics.items())


@pytest.mark.parametrize("objective", [DistillKD(kd_ratio=0.5, temperature=2.0), DistillSKL(kd_ratio=0.5, alpha=0.1)])
def test_gradient_reaches_policy_logits_only_where_they_predict_chosen_response_tokens(objective):
    case = tiny_case()
    policy_logits = case.policy_logits.clone().requires_grad_()
    policy_logps = label_logprobs(policy_logits, case.input_ids)
    objective(objective_inputs(case, policy_logits=policy_logits, policy_logps=policy_logps)).loss.backward()
    receives_gradient = policy_logits.grad.abs().sum(dim=-1) > 0
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, [1, 2]] = True  # logits[:, t - 1] for the chosen response tokens t = 2, 3
    assert torch.equal(receives_gradient, expected)


def test_distillation_runs_on_the_teacher_without_a_reference():
    for objective in (DistillKD(), DistillSKL()):
        assert objective.needs_teacher and not objective.needs_reference


@pytest.mark.parametrize(
    "build",
    [lambda: DistillKD(kd_ratio=1.5), lambda: DistillKD(temperature=0.0), lambda: DistillSKL(kd_ratio=-0.1), lambda: DistillSKL(alpha=1.1)],
)
def test_invalid_knobs_are_refused(build):
    with pytest.raises(ValueError, match="method\\."):
        build()
