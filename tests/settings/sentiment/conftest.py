"""Fixtures of the sentiment tests."""

from pathlib import Path

import pytest

from support.sentiment import build_word_tokenizer
from support.tiny import build_model


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_chat_lm")
    build_model(out, build_word_tokenizer(out))
    return out
