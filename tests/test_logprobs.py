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


# ------------------------------------------------------------------ the fused path against the full-logit reference

import copy
import logging
import math

from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from selalign.data import PreferenceCollator
from selalign.logprobs import (
    FusedOutputLayer, HeadStates, HiddenStateDistributions, LogitsDistributions, Tiles, fused_label_logprobs, fused_output_layer,
    fused_token_kl, model_label_logprobs, token_kl, token_logps,
)

SMALL_TILES = Tiles(tokens=5, vocab=7)  # many tiles, with ragged ends, on the small shapes below


def reference_logprobs(hidden, weight, bias, targets, vocab):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    return torch.log_softmax(logits[:, :vocab].float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("tiles", [SMALL_TILES, Tiles(tokens=1, vocab=1), Tiles(tokens=4096, vocab=4096)], ids=["small", "single", "whole"])
def test_fused_label_logprobs_and_gradients_equal_log_softmax_of_full_logits(with_bias, tiles):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 6, generator=generator, requires_grad=True)
    weight = torch.randn(31, 6, generator=generator, requires_grad=True)  # 31 output rows, a vocabulary of 29: a padded layer
    bias = torch.randn(31, generator=generator, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 29, (23,), generator=generator)
    got = fused_label_logprobs(hidden, weight, bias, targets, vocab_size=29, tiles=tiles)
    expected = reference_logprobs(hidden, weight, bias, targets, 29)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    upstream = torch.randn(23, generator=generator)
    inputs = [hidden, weight] + ([bias] if with_bias else [])
    fused_grads = torch.autograd.grad(got, inputs, upstream)
    reference_grads = torch.autograd.grad(expected, inputs, upstream)
    for fused, reference in zip(fused_grads, reference_grads):
        torch.testing.assert_close(fused, reference, atol=1e-5, rtol=0)
    assert fused_grads[1][29:].abs().max() == 0  # rows past the vocabulary are not part of the distribution


def test_fused_label_logprobs_in_bfloat16_within_the_stated_tolerance():
    """In bf16 both paths compute logits in bf16 and normalise them in float32: they agree to bf16 rounding of the
    logits (at most 0.02 here, for logits of magnitude ~10); gradients to 2% of their scale."""
    generator = torch.Generator().manual_seed(1)
    hidden = (2 * torch.randn(40, 16, generator=generator)).bfloat16().requires_grad_()
    weight = torch.randn(50, 16, generator=generator).bfloat16().requires_grad_()
    targets = torch.randint(0, 50, (40,), generator=generator)
    got = fused_label_logprobs(hidden, weight, None, targets, tiles=SMALL_TILES)
    expected = torch.log_softmax((hidden @ weight.t()).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)
    fused_grads = torch.autograd.grad(got.sum(), [hidden, weight])
    reference_grads = torch.autograd.grad(expected.sum(), [hidden, weight])
    for fused, reference in zip(fused_grads, reference_grads):
        assert (fused.float() - reference.float()).abs().max() <= 0.02 * reference.float().abs().max()


@pytest.mark.parametrize("skew, temperature", [(0.0, 1.0), (0.0, 2.0), (0.3, 1.0), (1.0, 1.0)])
def test_fused_token_kl_and_gradients_equal_token_kl(skew, temperature):
    generator = torch.Generator().manual_seed(2)
    p_hidden, q_hidden = (torch.randn(17, 5, generator=generator).requires_grad_() for _ in range(2))
    p_weight, q_weight = (3 * torch.randn(24, 5, generator=generator).requires_grad_() for _ in range(2))
    p_bias = torch.randn(24, generator=generator).requires_grad_()
    got = fused_token_kl(HeadStates(p_hidden, p_weight, p_bias), HeadStates(q_hidden, q_weight), vocab_size=21, temperature=temperature, skew=skew, tiles=SMALL_TILES)
    # token_kl reads the distribution of token t from logits[:, t - 1]: lay the 17 positions out as one row of 18.
    p_logits = torch.cat([p_hidden @ p_weight.t() + p_bias, torch.zeros(1, 24)])[None, :, :21]
    q_logits = torch.cat([q_hidden @ q_weight.t(), torch.zeros(1, 24)])[None, :, :21]
    mask = torch.ones(1, 18, dtype=torch.bool)
    mask[0, 0] = False
    expected = token_kl(p_logits, q_logits, mask, temperature, skew)[0, 1:]
    # float32 rounding of KLs up to ~30 nats: agreement to 1e-5 of each quantity's scale
    torch.testing.assert_close(got, expected, atol=1e-5 * max(1.0, expected.abs().max().item()), rtol=0)
    if skew < 1:
        assert expected.min() > 1e-3  # the distributions differ: a real test of the divergence
    upstream = torch.randn(17, generator=generator)
    inputs = [p_hidden, p_weight, p_bias, q_hidden, q_weight]
    for fused, reference in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(expected, inputs, upstream, allow_unused=True)):
        reference = torch.zeros_like(fused) if reference is None else reference
        torch.testing.assert_close(fused, reference, atol=1e-5 * max(1.0, reference.abs().max().item()), rtol=0)


def tiny_llama(attn_implementation="sdpa", seed=0, vocab=120, tied=False, **config):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=0, tie_word_embeddings=tied, attn_implementation=attn_implementation, **config,
    ))


def random_pairs(count, vocab=120, seed=0, longest=12):
    generator = torch.Generator().manual_seed(seed)

    def tokens(low, high):
        return torch.randint(3, vocab, (int(torch.randint(low, high + 1, (1,), generator=generator)),), generator=generator).tolist()

    return [{"index": i, "prompt_ids": tokens(1, 6), "chosen_ids": tokens(1, longest), "rejected_ids": tokens(1, longest)} for i in range(count)]


def model_grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen2_tied"])
def test_packed_fused_log_probs_and_gradients_equal_the_padded_full_logit_path(attn_implementation, family):
    if family == "llama":
        model = tiny_llama(attn_implementation)
    else:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=120, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, tie_word_embeddings=True, attn_implementation=attn_implementation))
    reference = copy.deepcopy(model)
    batch = PreferenceCollator(0)(random_pairs(5))
    mask = batch["response_mask"]
    assert batch["packed"]["input_ids"].shape[0] < mask.shape[0]  # sequences really share rows
    expected = model_label_logprobs(reference, batch["input_ids"], batch["attention_mask"])
    upstream = torch.randn(mask.shape, generator=torch.Generator().manual_seed(3)) * mask
    (expected * upstream).sum().backward()
    expected_grads = model_grads(reference)
    for packing in (True, False):
        model.zero_grad()
        got = token_logps(model, batch, packing=packing).logps
        torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=0)
        assert (got[~mask] == 0).all()
        (got * upstream).sum().backward()
        grads = model_grads(model)
        assert grads.keys() == expected_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-5, rtol=0, msg=name)
    assert isinstance(model.get_output_embeddings(), FusedOutputLayer)
    if family == "qwen2_tied":
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_chosen_rows_alone_equal_the_chosen_rows_of_all():
    model = tiny_llama()
    batch = PreferenceCollator(0)(random_pairs(4))
    with torch.no_grad():
        everything = token_logps(model, batch).logps
        chosen = token_logps(model, batch, rows="chosen").logps
    torch.testing.assert_close(chosen, everything[:4], atol=1e-6, rtol=0)


def test_fused_output_layer_is_a_plain_linear_layer_outside_a_request():
    model = tiny_llama()
    ids = torch.randint(3, 120, (2, 7))
    before = model(input_ids=ids).logits
    layer = fused_output_layer(model)
    assert fused_output_layer(model) is layer and layer.weight is model.lm_head.weight
    torch.testing.assert_close(model(input_ids=ids).logits, before, atol=0, rtol=0)
    assert set(model.state_dict()) == set(tiny_llama().state_dict())  # save_pretrained writes the same keys


def test_models_whose_forward_transforms_logits_keep_the_full_logit_path(caplog):
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with caplog.at_level(logging.WARNING, logger="selalign.logprobs"):
        assert fused_output_layer(model) is None
    assert "final_logit_softcapping" in caplog.text
    batch = PreferenceCollator(0)(random_pairs(3))
    result = token_logps(model, batch, keep_distributions=True)
    assert result.logits is not None and result.logits.shape == (*batch["input_ids"].shape, 120)
    expected = model_label_logprobs(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(result.logps[batch["response_mask"]], expected[batch["response_mask"]])


def test_models_without_packing_support_run_padded_rows(caplog):
    model = tiny_llama()
    batch = PreferenceCollator(0)(random_pairs(3))
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(sorted(kwargs)), with_kwargs=True)
    with torch.no_grad():
        packed = token_logps(model, batch).logps
        model._supports_attention_backend = False  # a model that builds its masks without position ids
        with caplog.at_level(logging.WARNING, logger="selalign.logprobs"):
            padded = token_logps(model, batch).logps
    assert "position_ids" in seen[0] and "attention_mask" not in seen[0]
    assert "attention_mask" in seen[1] and "position_ids" not in seen[1]
    assert "runs padded batches instead of packed rows" in caplog.text
    torch.testing.assert_close(padded, packed, atol=1e-6, rtol=0)


def test_hidden_state_distributions_equal_logits_distributions_on_the_rows_asked_for():
    policy, teacher = tiny_llama(seed=0), tiny_llama(seed=1)
    with torch.no_grad():  # larger output weights: distributions far enough apart that the KL is not tiny
        for model in (policy, teacher):
            model.lm_head.weight.mul_(20)
    batch = PreferenceCollator(0)(random_pairs(4))
    mask = batch["response_mask"]
    logits = {role: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits for role, model in (("policy", policy), ("teacher", teacher))}
    reference = LogitsDistributions({"policy": logits["policy"], "teacher": logits["teacher"][:4].detach()}, mask)
    states = {"policy": token_logps(policy, batch, keep_distributions=True).states}
    with torch.no_grad():
        states["teacher"] = token_logps(teacher, batch, rows="chosen", keep_distributions=True).states
    fused = HiddenStateDistributions(states, {"policy": "all", "teacher": "chosen"}, batch["label_positions"] + 1, tuple(mask.shape), batch["num_chosen_labels"], 120)
    for p, q, rows, temperature, skew in [("teacher", "policy", "chosen", 2.0, 0.0), ("policy", "teacher", "chosen", 1.0, 0.1)]:
        got, expected = fused.kl(p, q, rows, temperature, skew), reference.kl(p, q, rows, temperature, skew)
        assert expected[mask[:4]].min() > 1e-2
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert (got[~mask[:4]] == 0).all()
    grad_fused = torch.autograd.grad(fused.kl("teacher", "policy", "chosen").sum(), policy.lm_head.weight)[0]
    grad_reference = torch.autograd.grad(reference.kl("teacher", "policy", "chosen").sum(), policy.lm_head.weight)[0]
    torch.testing.assert_close(grad_fused, grad_reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.kl("policy", "policy", "rejected"), torch.zeros(4, mask.shape[1]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="only the chosen rows of 'teacher'"):
        fused.kl("teacher", "policy", rows="all")
    with pytest.raises(ValueError, match="no next-token distributions of 'reference'"):
        fused.kl("reference", "policy")


def largest_allocation(step) -> int:
    """Bytes of the largest allocation any single operator makes while ``step()`` runs (CPU profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    return max(event.self_cpu_memory_usage for event in profiler.events())


def test_no_rows_by_length_by_vocabulary_tensor_is_allocated_in_a_training_step():
    """8 rows x 128 tokens x 16384 entries: float32 logits would be one 64 MiB allocation, 16 times a CPU tile."""
    from functools import partial

    from selalign.module import PreferenceModule
    from selalign.objectives import SelectiveDPO

    vocab = 16384
    module = PreferenceModule(tiny_llama(vocab=vocab), tiny_llama(vocab=vocab, seed=1), SelectiveDPO(), partial(torch.optim.SGD, lr=0.1))
    pairs = random_pairs(4, vocab=vocab, longest=100)
    for pair in pairs:
        pair["prompt_ids"] = pair["prompt_ids"][:1] * 28
        pair["chosen_ids"] = (pair["chosen_ids"] * 100)[:100]
    batch = PreferenceCollator(0)(pairs)
    rows, length = batch["input_ids"].shape
    assert length == 128
    logits_bytes = rows * length * vocab * 4
    step_peak = largest_allocation(lambda: module.training_step(batch, 0).backward())
    assert step_peak < logits_bytes / 8
    # The check sees a logits tensor when there is one: the model's own forward makes it.
    full_peak = largest_allocation(lambda: module.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.sum().backward())
    assert full_peak >= logits_bytes
