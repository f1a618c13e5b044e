"""Fixtures of the generator tests: a tiny model whose tokenizer has a chat template."""

from __future__ import annotations

import pytest

from support.tiny import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory):
    """A tiny random Llama whose tokenizer has a chat template."""
    folder = tmp_path_factory.mktemp("tiny_chat_lm")
    build_model(folder, build_tokenizer(folder, with_chat_template=True))
    return folder
