"""Tiny tokenizers, causal LMs and preference rows built in-process for tests."""

from __future__ import annotations

import json
from pathlib import Path

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow"]


def toy_pairs(n: int) -> list[dict]:
    """Deterministic pairs: the chosen response names the animal's colour from a fixed table, the rejected another."""
    rows = []
    for i in range(n):
        animal = ANIMALS[i % len(ANIMALS)]
        right = COLORS[i % len(COLORS)]
        wrong = COLORS[(i + 3) % len(COLORS)]
        rows.append({
            "id": f"toy-{i}",
            "prompt": f"What colour is the {animal} number {i % 7}?",
            "chosen": f"Well, the {animal} is {right}. Thanks for asking.",
            "rejected": f"Hello! The {animal} is {wrong}, I think.",
        })
    return rows


def build_tokenizer(out_dir: Path, extra_text: str = "", with_chat_template: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_pairs(64)] + ["User: Assistant: System:", extra_text]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    if with_chat_template:
        fast.chat_template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
    fast.save_pretrained(out_dir)
    return fast


def build_model(out_dir: Path, tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hf_answers(model, tokenizer, conversations, max_new_tokens, temperature=0.0, batch_size=8, seed=0, cache=None, progress=False):
    """The ``hf`` generator's answers of an in-memory model (the call every test of generation makes)."""
    from selalign.generators import Policy, Sampling
    from selalign.generators.hf import HFGenerator

    policy = Policy(model=model, tokenizer=tokenizer, identity=None if cache is None else cache.model_identity)
    return HFGenerator(batch_size, progress=progress).generate(policy, conversations, Sampling(max_new_tokens, temperature, seed), cache)
