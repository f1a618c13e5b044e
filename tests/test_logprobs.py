import pytest
import torch

from selalign.logprobs import label_logprobs


def test_matches_log_softmax_gather_and_is_chunk_independent():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 17, generator=generator)
    input_ids = torch.randint(0, 17, (3, 9), generator=generator)
    expected = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    for chunk in (1, 5, 4096):
        got = label_logprobs(logits, input_ids, chunk_tokens=chunk)
        assert got.shape == (3, 9)
        assert torch.all(got[:, 0] == 0)
        assert torch.allclose(got[:, 1:], expected, atol=1e-6)


def test_gradient_matches_log_softmax():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    input_ids = torch.randint(0, 7, (2, 5))
    label_logprobs(logits, input_ids, chunk_tokens=3).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).sum().backward()
    assert torch.allclose(ours, logits.grad, atol=1e-6)


def test_logits_distributions_give_token_kl_on_the_rows_asked_for():
    from selalign.logprobs import LogitsDistributions, token_kl

    generator = torch.Generator().manual_seed(0)
    policy, reference = torch.randn(4, 5, 7, generator=generator), torch.randn(4, 5, 7, generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    distributions = LogitsDistributions({"policy": policy, "reference": reference, "teacher": reference[:2]}, mask)
    torch.testing.assert_close(distributions.kl("reference", "policy"), token_kl(reference, policy, mask))
    torch.testing.assert_close(distributions.kl("reference", "policy", rows="rejected"), token_kl(reference[2:], policy[2:], mask[2:]))
    torch.testing.assert_close(distributions.kl("teacher", "policy", rows="chosen", temperature=2.0), token_kl(reference[:2], policy[:2], mask[:2], 2.0))
    with pytest.raises(ValueError, match="only the chosen rows of 'teacher'"):
        distributions.kl("teacher", "policy", rows="all")
    with pytest.raises(ValueError, match="no next-token distributions of 'selector'"):
        distributions.kl("selector", "policy")
    # KL is 0 off the response and where the two distributions are equal.
    assert (distributions.kl("reference", "policy")[~mask] == 0).all()
    assert distributions.kl("policy", "policy").abs().max() < 1e-6


def test_candidate_logprobs_equal_response_logprobs(tiny_lm):
    from selalign.logprobs import candidate_logprobs, response_logprobs
    from selalign.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(str(tiny_lm)), load_tokenizer(str(tiny_lm))
    prompt = "What colour is the cat number 3?"
    answers = ["Well, the cat is red.", "Well, the cat is blue.", "Well, the cat is dark green.", "Hello! The dog"]
    assert candidate_logprobs(model, tokenizer, prompt, answers) == pytest.approx(response_logprobs(model, tokenizer, [prompt] * 4, answers), abs=1e-4)
