"""Judgments kept on disk so that a repeated or interrupted evaluation asks the judge nothing twice.

The cache is a JSON Lines file, one judgment per line::

    {"key": "<sha256>", "judge": {...identity...}, "positions": {...} | null,
     "raw": "...", "verdict": 8.0 | "A>B" | null, "error": null | "...", "attempts": 1}

``key`` hashes the judge's identity (class, model, endpoint, sampling: never the API key), the exact prompt
messages (which contain the answers being judged) and the answer positions. Replies without a verdict are cached
too (the judge was paid for them). The file is a ``KeyedJsonl``, the store the generation cache uses as well.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selalign.judges.base import Judgment, Messages


def content_key(material: Any) -> str:
    """Stable sha256 of JSON-serializable ``material`` (dict keys sorted)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class KeyedJsonl:
    """Append-only JSON Lines file of rows that each carry a ``"key"``; opening an existing file resumes from it.

    Lines are appended one at a time and flushed to disk (fsync) before the next, so a crash loses at most the line
    being written; a torn last line is cut off when the file is opened again. A later row wins over an earlier one
    with the same key.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(self.path, "r+b") as file:
                file.truncate(len(complete))
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number} is not valid JSON ({error}); remove the line to resume") from None
            self._rows[row["key"]] = row

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def put(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (which has a ``"key"``) and make it durable before returning."""
        line = json.dumps(dict(row), ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        self._rows[row["key"]] = dict(row)


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
