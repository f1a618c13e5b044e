"""Answers kept on disk so that a repeated or interrupted evaluation generates nothing twice, whatever the generator.

A ``GenerationCache`` holds the answers of one model (its ``selalign.store.model_identity``) in a JSON Lines file,
one answer per line::

    {"key": "<sha256>", "generator": {...}, "sampling": {...}, "conversation": [...], "answer": "..."}

``key`` hashes the model identity, the generator's identity (its engine and what changes its answers: never an
API key or a port), the conversation and the sampling settings. Benchmarks keep their caches in the shared cache
folder (``paths.cache_dir``), one file per model: ``GenerationCache.in_folder(<cache>/generations/<benchmark>,
identity)``, so a run in a new run dir finds what an earlier run generated. The file is a
``selalign.store.KeyedJsonl`` (durable line by line, a torn last line dropped on reopening).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selalign.generators.base import Conversation, Sampling
from selalign.store import KeyedJsonl, content_key


def model_file_name(model_identity: Mapping[str, Any]) -> str:
    """``<last part of name_or_path>-<16 hex digits of the identity's hash>.jsonl``: readable and one per model."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(model_identity.get("name_or_path", "model"))).name)[:60] or "model"
    return f"{label}-{content_key(dict(model_identity))[:16]}.jsonl"


class GenerationCache:
    """Answers of one model (``model_identity``: what makes its outputs what they are) in a JSON Lines file."""

    def __init__(self, path: str | os.PathLike[str], model_identity: Mapping[str, Any]) -> None:
        self._store = KeyedJsonl(path)
        self.path = self._store.path
        self.model_identity = dict(model_identity)

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], model_identity: Mapping[str, Any]) -> GenerationCache:
        """The cache of this model in ``folder`` (the file ``model_file_name(model_identity)``)."""
        return cls(Path(folder).expanduser() / model_file_name(model_identity), model_identity)

    def __len__(self) -> int:
        return len(self._store)

    def key(self, generator_identity: Mapping[str, Any], conversation: Conversation, sampling: Sampling) -> str:
        return content_key({
            "model": self.model_identity,
            "generator": dict(generator_identity),
            "conversation": [dict(message) for message in conversation],
            "sampling": asdict(sampling),
        })

    def get(self, key: str) -> str | None:
        row = self._store.get(key)
        return None if row is None else row["answer"]

    def put(self, key: str, conversation: Sequence[Mapping[str, str]], answer: str, generator_identity: Mapping[str, Any], sampling: Sampling) -> None:
        """Append one answer (with what it answers, for reading the file) and make it durable before returning."""
        self._store.put({
            "key": key,
            "generator": dict(generator_identity),
            "sampling": asdict(sampling),
            "conversation": [dict(message) for message in conversation],
            "answer": answer,
        })
