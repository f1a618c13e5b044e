"""A tiny hand-checkable case for the objective tests: one pair, 3-word vocabulary, 2 chosen response tokens.

Positions 0-1 are the prompt; the chosen response is positions 2-3 and position 4 is padding; the rejected
response is positions 2-4. The distribution of the token at position t sits in ``logits[:, t - 1]``, so only
logits[:, 1] and logits[:, 2] of the chosen row carry distillation (and logits[:, 1:4] of the rejected row the
reference's token-level KL); every other logit is arbitrary on purpose.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from selalign.logprobs import LogitsDistributions
from selalign.objectives import ObjectiveInputs

TEACHER_PROBS = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]      # p_T of chosen response tokens 2 and 3
STUDENT_PROBS = [[1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]]  # q_theta of the same tokens
REFERENCE_REJECTED_PROBS = [[0.25, 0.25, 0.5], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]  # pi_ref of rejected response tokens 2-4
ARBITRARY = [5.0, -3.0, 2.0]


def tiny_case() -> SimpleNamespace:
    """The case's tensors and its hand-computed values."""
    teacher_logits = torch.tensor([[ARBITRARY, [math.log(p) for p in TEACHER_PROBS[0]], [math.log(p) for p in TEACHER_PROBS[1]], ARBITRARY, ARBITRARY]])
    # The reference: the teacher's distributions on the chosen row, REFERENCE_REJECTED_PROBS on the rejected row.
    reference_logits = torch.cat([teacher_logits, torch.tensor([[ARBITRARY, *([math.log(p) for p in probs] for probs in REFERENCE_REJECTED_PROBS), ARBITRARY]])])
    policy_logits = torch.tensor([
        [ARBITRARY, [0.0, 0.0, 0.0], [math.log(q) for q in STUDENT_PROBS[1]], ARBITRARY, ARBITRARY],
        [[1.0, 2.0, 3.0], [0.5, -0.5, 0.0], [2.0, 0.0, -1.0], [0.0, 1.0, 0.0], ARBITRARY],
    ])
    # Per-token log-probs as the module would pass them; 9.0 / 5.0 mark prompt and padding positions.
    policy_logps = torch.tensor([[0.0, 9.0, -1.0, -2.0, 9.0], [0.0, 9.0, -3.0, -1.0, -2.0]])
    ref_logps = torch.tensor([[0.0, 5.0, -1.5, -1.5, 5.0], [0.0, 5.0, -2.0, -2.0, -1.0]])
    response_mask = torch.tensor([[False, False, True, True, False], [False, False, True, True, True]])
    # KL(p_T || q) of each chosen response token, by hand; the second token's last word has p_T = q (log 1 = 0).
    kl_tokens = [
        0.5 * math.log(0.5 / (1 / 3)) + 0.25 * math.log(0.25 / (1 / 3)) + 0.25 * math.log(0.25 / (1 / 3)),
        0.2 * math.log(0.2 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.5 * math.log(0.5 / 0.5),
    ]
    return SimpleNamespace(
        input_ids=torch.tensor([[0, 1, 0, 2, 1], [0, 1, 1, 0, 2]]),
        response_mask=response_mask,
        policy_logits=policy_logits,
        teacher_logits=teacher_logits,
        reference_logits=reference_logits,
        policy_logps=policy_logps,
        ref_logps=ref_logps,
        kl_tokens=kl_tokens,
        kl_mean=(kl_tokens[0] + kl_tokens[1]) / 2,
        chosen_nll=(1.0 + 2.0) / 2,  # -(-1 - 2) / 2 response tokens
        # DPO by hand: policy sums chosen -3, rejected -6; reference sums chosen -3, rejected -5.
        dpo_margin=(-3.0 - -3.0) - (-6.0 - -5.0),
    )


def noise(*shape: int) -> torch.Tensor:
    """Large reproducible values to overwrite positions that must not matter."""
    return 10 * torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def objective_inputs(
    case: SimpleNamespace,
    policy_logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    reference_logits: torch.Tensor | None = None,
    **overrides,
) -> ObjectiveInputs:
    """ObjectiveInputs of ``case``, with any field replaced by ``overrides``; the policy's, the teacher's and the
    reference's next-token distributions come from ``policy_logits``, ``teacher_logits`` and ``reference_logits``
    (default: the case's)."""
    logits = {
        "policy": case.policy_logits if policy_logits is None else policy_logits,
        "teacher": case.teacher_logits if teacher_logits is None else teacher_logits,
        "reference": case.reference_logits if reference_logits is None else reference_logits,
    }
    fields = dict(
        policy_logps=case.policy_logps, response_mask=case.response_mask, ref_logps=case.ref_logps,
        distributions=LogitsDistributions(logits, overrides.get("response_mask", case.response_mask)),
    )
    return ObjectiveInputs(**(fields | overrides))



def random_pairs(pairs: int = 4, length: int = 12, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(policy_logps, ref_logps, response_mask), [2B, T] each, chosen rows first: random negative log-probs and
    responses of varied starts and lengths (every row has at least two response tokens)."""
    generator = torch.Generator().manual_seed(seed)
    policy = -torch.rand(2 * pairs, length, generator=generator, dtype=dtype) * 5
    ref = -torch.rand(2 * pairs, length, generator=generator, dtype=dtype) * 5
    mask = torch.zeros(2 * pairs, length, dtype=torch.bool)
    for row in range(2 * pairs):
        mask[row, 2 + row % 3 : length - row % 4] = True
    return policy, ref, mask
