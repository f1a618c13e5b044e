"""What a judge returns, how its reply is read, and the contract every judge implements.

A judge turns chat messages into reply text (``Judge.acomplete``, awaited by ``judge_all`` with up to
``max_concurrency`` requests at once inside one ``async with judge.session()``; ``Judge.complete`` is the same for one
request from synchronous code). ``Judge.ajudge`` / ``Judge.judge`` ask again while the reply carries no verdict (up to
``max_parse_attempts`` asks) and then record the failure as an error: a reply that cannot be read is never scored,
and never silently a tie. Transport failures are not judgments: a judge raises ``JudgeUnavailableError`` once its
retries are spent, ``JudgeRequestError`` when the request itself is refused. ``Judge.preflight`` fails the same way,
before any answer is generated, when the judge cannot work (no key, endpoint unreachable, model not served).

Verdict parsers take the reply text and return the verdict, or None when there is none:

- ``parse_mt_bench_rating``: MT-Bench single-answer grading, ``Rating: [[8]]`` -> 8.0 (as FastChat accepts:
  ``[[x]]`` / ``[[x.y]]`` first, then ``[x]``, then ``Rating: x``); ratings outside 1..10 are None.
- ``parse_arena_hard_verdict``: Arena-Hard labels ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``
  (as Arena-Hard v2.0 reads them: upper-cased text, ``[[...]]`` first then ``[...]``, last match wins), returned in
  that canonical form; mirrored spellings (``A<<B``, ``B<A``, ``B=A`` ...) are mapped onto it.
- ``parse_alpaca_eval_choice``: AlpacaEval's model identifier, ``m`` (first output) or ``M`` (second output).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from selalign.generators.concurrency import run_sync

Verdict = float | str
VerdictParser = Callable[[str], Verdict | None]
Messages = list[dict[str, str]]


class JudgeError(RuntimeError):
    """A judge could not produce judgments at all (as opposed to a reply without a verdict)."""


class JudgeUnavailableError(JudgeError):
    """The judge endpoint kept failing (timeouts, connection errors, 429/5xx) after all retries."""


class JudgeRequestError(JudgeError):
    """The judge refused the request (missing API key, 4xx other than 408/429): retrying will not help."""


@dataclass(frozen=True)
class Judgment:
    """One judge verdict: the raw reply, the parsed verdict (None if none was found) and why it failed."""

    raw: str
    verdict: Verdict | None
    error: str | None = None
    attempts: int = 1

    @property
    def is_error(self) -> bool:
        return self.error is not None


class Judge(ABC):
    """A judge model behind some transport. Subclasses implement ``identity`` and ``complete`` (a blocking call); a
    transport that serves many requests at once also overrides ``acomplete`` (a coroutine) and ``session``.

    ``max_concurrency`` is how many ``ajudge`` calls ``judge_all`` runs at once; a blocking ``complete`` runs in a
    worker thread, so judges that are not safe to call concurrently keep ``max_concurrency = 1``.
    """

    max_concurrency: int = 1
    max_parse_attempts: int = 3

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What makes this judge's replies what they are (class, model, endpoint, sampling), never a secret."""

    @abstractmethod
    def complete(self, messages: Messages) -> str:
        """The judge's reply text to chat ``messages``; raises ``JudgeError`` when no reply can be had."""

    async def acomplete(self, messages: Messages) -> str:
        """``complete`` without blocking the event loop (in a worker thread unless a subclass does better)."""
        return await asyncio.to_thread(self.complete, messages)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """What a batch of ``acomplete`` calls shares (an HTTP connection pool); nothing by default."""
        yield

    def preflight(self) -> None:
        """Raise ``JudgeError`` now if judging cannot succeed; nothing to check by default."""

    async def ajudge(self, messages: Messages, parse: VerdictParser) -> Judgment:
        """Ask until ``parse`` finds a verdict in the reply, at most ``max_parse_attempts`` times."""
        if self.max_parse_attempts < 1:
            raise ValueError(f"max_parse_attempts must be >= 1, got {self.max_parse_attempts}")
        for attempt in range(1, self.max_parse_attempts + 1):
            raw = await self.acomplete(messages)
            verdict = parse(raw)
            if verdict is not None:
                return Judgment(raw=raw, verdict=verdict, attempts=attempt)
        return Judgment(raw=raw, verdict=None, error=f"no verdict found in the reply after {attempt} attempt(s)", attempts=attempt)

    def judge(self, messages: Messages, parse: VerdictParser) -> Judgment:
        """``ajudge`` for one prompt, from synchronous code."""

        async def in_session() -> Judgment:
            async with self.session():
                return await self.ajudge(messages, parse)

        return run_sync(in_session())


_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Reply text without ``<think>...</think>`` blocks that reasoning judges served by vLLM/SGLang may emit."""
    return _THINKING.sub("", text)


_RATING_PATTERNS = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"), re.compile(r"Rating: (\d+\.?\d*)"))


def parse_mt_bench_rating(text: str) -> float | None:
    """The 1..10 rating of an MT-Bench single-grading reply (first match of the first pattern that matches)."""
    text = strip_thinking(text)
    for pattern in _RATING_PATTERNS:
        match = pattern.search(text)
        if match:
            rating = float(match.group(1))
            return rating if 1.0 <= rating <= 10.0 else None
    return None


ARENA_HARD_LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
_LABEL_SPELLINGS = {
    **{label: label for label in ARENA_HARD_LABELS},
    "B<<A": "A>>B",
    "B<A": "A>B",
    "B=A": "A=B",
    "A<B": "B>A",
    "A<<B": "B>>A",
}
_LABEL_PATTERNS = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))


def parse_arena_hard_verdict(text: str) -> str | None:
    """The canonical Arena-Hard label of a pairwise reply, or None when there is no known label."""
    text = strip_thinking(text).upper()
    for pattern in _LABEL_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _LABEL_SPELLINGS.get(matches[-1])
    return None


_CHOICE = re.compile(r"""^[\s"'`]*(m|M)[\s"'`.]*$""")


def parse_alpaca_eval_choice(text: str) -> str | None:
    """``m`` or ``M`` when the reply is exactly one AlpacaEval model identifier (quotes/space tolerated)."""
    match = _CHOICE.match(strip_thinking(text))
    return match.group(1) if match else None
