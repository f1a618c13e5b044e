"""A judge run in-process from a local causal LM (``transformers``): offline, and far weaker than an API judge.

The model sees the same judge prompts, rendered with its tokenizer's chat template, and its greedy (or sampled,
``temperature > 0``, with a new seed at every ask) answer from the ``hf`` generator is the reply text. It serves one
request at a time (``judge_all`` runs it in a worker thread).
"""

from __future__ import annotations

from typing import Any

import torch

from selalign.generators.base import Policy, Sampling
from selalign.generators.hf import HFGenerator
from selalign.judges.base import Judge, Messages
from selalign.models import freeze, load_causal_lm, load_tokenizer


class LocalHFJudge(Judge):
    """Judge from a local model directory or hub name, e.g. ``Qwen/Qwen2.5-7B-Instruct``."""

    max_concurrency = 1

    def __init__(
        self,
        name_or_path: str,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        max_parse_attempts: int = 1,
        device: str | None = None,
        dtype: str = "auto",
    ) -> None:
        self.name_or_path = name_or_path
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_parse_attempts = max_parse_attempts
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(name_or_path)
        if not self.tokenizer.chat_template:
            raise ValueError(f"judge model {name_or_path!r} has no chat template; use an instruction-tuned model as judge")
        self.model = freeze(load_causal_lm(name_or_path, dtype=dtype)).to(self.device)
        self._generator = HFGenerator(batch_size=1, progress=False)
        self._asks = 0

    def __repr__(self) -> str:
        return f"LocalHFJudge({self.name_or_path!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "model": self.name_or_path,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }

    def complete(self, messages: Messages) -> str:
        self._asks += 1
        policy = Policy(model=self.model, tokenizer=self.tokenizer)
        [reply] = self._generator.generate(policy, [messages], Sampling(self.max_new_tokens, self.temperature, seed=self._asks))
        return reply
