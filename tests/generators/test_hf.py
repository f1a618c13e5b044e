"""The hf generator on tiny models: decoding, left padding, prompt formats, multi-turn conversations, the answer cache."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from support.tiny import build_model, build_tokenizer
from selalign.data.formats import render_prompt
from selalign.generators import GenerationCache, Policy, Sampling
from selalign.generators.hf import HFGenerator
from support.tiny import hf_answers as generate
from selalign.models import load_tokenizer

QUESTIONS = [
    [{"role": "user", "content": "What colour is the cat?"}],
    [{"role": "user", "content": "What colour is the dog number 3? Well, the dog is blue. Thanks for asking, I think."}],
    [{"role": "user", "content": "Hello! The owl is green, I think. What colour is the fox number 5 and the bee number 2?"}],
]


class RecordingLM(LlamaForCausalLM):
    """A causal LM that remembers the prompts (pads removed) and the new tokens of every ``generate`` call."""

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        self.calls.append([row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)])
        output = super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        self.new_tokens.append(output[:, input_ids.shape[1] :].tolist())
        return output


def recording(folder) -> tuple[RecordingLM, object]:
    model = RecordingLM.from_pretrained(folder)
    model.calls, model.new_tokens = [], []
    return model, load_tokenizer(str(folder))


def test_greedy_is_deterministic(tiny_lm):
    model, tokenizer = recording(tiny_lm)
    first = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=2)
    assert first == generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=2)
    assert all(isinstance(answer, str) and answer == answer.strip() for answer in first)
    assert any(first)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_lm):
    model, tokenizer = recording(tiny_lm)
    state = torch.random.get_rng_state()
    sample = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, temperature=1.0, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert sample == generate(model, tokenizer, QUESTIONS, max_new_tokens=8, temperature=1.0, seed=1)
    assert sample != generate(model, tokenizer, QUESTIONS, max_new_tokens=8, temperature=1.0, seed=2)


def test_left_padding_answers_a_prompt_as_if_it_were_alone(tiny_lm):
    model, tokenizer = recording(tiny_lm)
    padding_side = tokenizer.padding_side
    alone = generate(model, tokenizer, QUESTIONS[:1], max_new_tokens=8)
    batched = generate(model, tokenizer, QUESTIONS, max_new_tokens=8, batch_size=3)
    assert len(model.calls[-1]) == 3 and len({len(prompt) for prompt in model.calls[-1]}) == 3  # one batch, three lengths
    assert batched[0] == alone[0]
    assert tokenizer.padding_side == padding_side


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat_template"])
def test_prompt_is_render_prompt_of_the_conversation(chat, tiny_lm, tiny_chat_lm):
    model, tokenizer = recording(tiny_chat_lm if chat else tiny_lm)
    generate(model, tokenizer, QUESTIONS[:1], max_new_tokens=2)
    [[prompt]] = model.calls
    text = tokenizer.decode(prompt)
    assert prompt == tokenizer(render_prompt(tokenizer, QUESTIONS[0]), add_special_tokens=False)["input_ids"]
    if chat:
        assert text == "<|im_start|>user\nWhat colour is the cat?<|im_end|>\n<|im_start|>assistant\n"
    else:
        assert text == "<bos>User: What colour is the cat?\nAssistant:"


def test_an_answer_ends_at_the_models_eos_ids(tiny_lm):
    model, tokenizer = recording(tiny_lm)
    [answer] = generate(model, tokenizer, QUESTIONS[:1], max_new_tokens=4)
    [[first_token, *_]] = model.new_tokens[-1]
    assert answer and first_token not in (tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.generation_config.eos_token_id = [first_token]
    assert generate(model, tokenizer, QUESTIONS[:1], max_new_tokens=4) == [""]


def test_second_turn_is_asked_after_the_models_own_first_answer(tiny_chat_lm):
    model, tokenizer = recording(tiny_chat_lm)
    turns = [["What colour is the cat?", "And the dog?"], ["What colour is the owl?"]]
    answers = HFGenerator().answer_turns(Policy(model=model, tokenizer=tokenizer), turns, Sampling(max_new_tokens=4))
    assert [len(a) for a in answers] == [2, 1]
    assert [len(call) for call in model.calls] == [2, 1]  # turn 1 of both, then turn 2 of the first
    conversation = [
        {"role": "user", "content": turns[0][0]},
        {"role": "assistant", "content": answers[0][0]},
        {"role": "user", "content": turns[0][1]},
    ]
    assert model.calls[1][0] == tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]


def test_cache_answers_a_second_run_without_generating(tiny_lm, tmp_path):
    model, tokenizer = recording(tiny_lm)
    turns = [["What colour is the cat?", "And the dog?"], ["What colour is the owl?"]]
    identity = {"name_or_path": str(tiny_lm)}
    policy, sampling = Policy(str(tiny_lm), identity, tokenizer, model), Sampling(max_new_tokens=4, temperature=0.7)
    first = HFGenerator().answer_turns(policy, turns, sampling, GenerationCache(tmp_path / "cache.jsonl", identity))
    calls = len(model.calls)
    again = HFGenerator().answer_turns(policy, turns, sampling, GenerationCache(tmp_path / "cache.jsonl", identity))
    assert again == first and len(model.calls) == calls
    rows = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["conversation"][1] == {"role": "assistant", "content": first[0][0]}
    assert rows[0]["generator"] == {"engine": "hf"} and rows[0]["sampling"] == {"max_new_tokens": 4, "temperature": 0.7, "seed": 0}

    generate(model, tokenizer, [rows[0]["conversation"][:1]], max_new_tokens=5, temperature=0.7, cache=GenerationCache(tmp_path / "cache.jsonl", identity))
    generate(model, tokenizer, [rows[0]["conversation"][:1]], max_new_tokens=4, temperature=0.7, seed=1, cache=GenerationCache(tmp_path / "cache.jsonl", identity))
    generate(model, tokenizer, [rows[0]["conversation"][:1]], max_new_tokens=4, temperature=0.7, cache=GenerationCache(tmp_path / "cache.jsonl", {"name_or_path": "other"}))
    assert len(model.calls) == calls + 3  # another length, seed or model is generated anew


def test_a_policy_without_its_model_is_refused_before_generating(tiny_lm):
    tokenizer = load_tokenizer(str(tiny_lm))
    with pytest.raises(ValueError, match="generator=hf decodes with the policy in memory: give the Policy its model and tokenizer"):
        HFGenerator().generate(Policy(name_or_path=str(tiny_lm), tokenizer=tokenizer), QUESTIONS, Sampling(4))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        HFGenerator(batch_size=0)
