"""Judgments kept on disk so that a repeated or interrupted evaluation asks the judge nothing twice.

The cache is a JSON Lines file, one judgment per line::

    {"key": "<sha256>", "judge": {...identity...}, "positions": {...} | null,
     "raw": "...", "verdict": 8.0 | "A>B" | null, "error": null | "...", "attempts": 1}

``key`` hashes the judge's identity (class, model, endpoint, sampling: never the API key), the exact prompt
messages (which contain the answers being judged) and the answer positions. Replies without a verdict are cached
too (the judge was paid for them). The file is a ``selalign.store.KeyedJsonl``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from selalign.judges.base import Judgment, Messages
from selalign.store import KeyedJsonl, content_key


def judgment_key(identity: Mapping[str, Any], messages: Messages, positions: Mapping[str, str] | None) -> str:
    """Stable hash of what determines a judgment."""
    return content_key({"judge": identity, "messages": messages, "positions": positions})


class JudgmentCache:
    """Judgments by key, in a ``KeyedJsonl`` file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._store = KeyedJsonl(path)
        self.path = self._store.path

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: str) -> Judgment | None:
        row = self._store.get(key)
        return None if row is None else Judgment(raw=row["raw"], verdict=row["verdict"], error=row["error"], attempts=row["attempts"])

    def put(self, key: str, judgment: Judgment, identity: Mapping[str, Any], positions: Mapping[str, str] | None) -> None:
        """Append one judgment and make it durable before returning."""
        self._store.put({
            "key": key,
            "judge": dict(identity),
            "positions": dict(positions) if positions is not None else None,
            "raw": judgment.raw,
            "verdict": judgment.verdict,
            "error": judgment.error,
            "attempts": judgment.attempts,
        })
