"""LocalHFJudge plumbing with a tiny random model: it replies with text and flags the missing verdict."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from selalign.judges import JudgmentCache, judge_all
from selalign.judges.base import parse_mt_bench_rating
from selalign.judges.batch import JudgeRequest
from selalign.judges.local_hf import LocalHFJudge

WORDS = ["the", "answer", "is", "good", "bad", "short", "long", "helpful", "clear", "wrong", "system", "user", "assistant", "grade", "this"]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant {% endif %}"


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-judge")
    vocab = {token: index for index, token in enumerate(["<unk>", "<eos>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=1, pad_token_id=1,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def test_local_judge_returns_raw_text_and_flags_the_parse_error(tiny_judge_dir, tmp_path):
    judge = LocalHFJudge(str(tiny_judge_dir), max_new_tokens=6, device="cpu", dtype="float32")
    messages = [{"role": "system", "content": "grade this"}, {"role": "user", "content": "the answer is good"}]
    [judgment] = judge_all(judge, [JudgeRequest(messages, parse_mt_bench_rating)], JudgmentCache(tmp_path / "cache.jsonl"))
    assert isinstance(judgment.raw, str) and judgment.raw.strip()
    assert set(judgment.raw.split()) <= set(WORDS)
    assert judgment.verdict is None and judgment.is_error
    assert judge.identity == {"class": "LocalHFJudge", "model": str(tiny_judge_dir), "temperature": 0.0, "max_new_tokens": 6}


def test_local_judge_needs_a_chat_template(tiny_judge_dir, tmp_path):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_judge_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no chat template"):
        LocalHFJudge(str(tmp_path))
