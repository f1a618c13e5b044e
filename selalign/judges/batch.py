"""Judging many prompts with bounded concurrency, through the on-disk cache.

``judge_all`` answers every request from the cache when it can and asks the judge only for the rest, awaiting up to
``judge.max_concurrency`` requests at once inside one ``judge.session()`` (``selalign.generators.concurrency``, the
mechanism the ``openai`` generator uses too). Each judgment is written to the cache as soon as it arrives. When the
judge fails outright (``JudgeError``: outage after retries, refused request), no new requests are started, the ones
in flight are finished and saved, and the error is raised again with how much was saved: rerunning resumes there.
Any other exception from a request (a bug, not an outage) stops the run the same way and is re-raised unchanged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from selalign.generators.concurrency import run_bounded, run_sync
from selalign.judges.base import Judge, JudgeError, Judgment, Messages, VerdictParser
from selalign.judges.cache import JudgmentCache, judgment_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeRequest:
    """One prompt for the judge. ``positions`` says which answer sits where, e.g. ``{"A": "model", "B": "baseline"}``."""

    messages: Messages
    parse: VerdictParser
    positions: dict[str, str] | None = None


def judge_all(judge: Judge, requests: Sequence[JudgeRequest], cache: JudgmentCache) -> list[Judgment]:
    """Judgments for ``requests``, in order."""
    identity = judge.identity
    keys = [judgment_key(identity, request.messages, request.positions) for request in requests]
    results: list[Judgment | None] = [cache.get(key) for key in keys]
    pending = [index for index, judgment in enumerate(results) if judgment is None]
    log.info("judging %d prompts: %d from %s, %d to ask %r", len(requests), len(requests) - len(pending), cache.path, len(pending), judge)
    if not pending:
        return results  # type: ignore[return-value]

    def save(position: int, judgment: Judgment) -> None:
        index = pending[position]
        cache.put(keys[index], judgment, identity, requests[index].positions)
        results[index] = judgment

    async def ask_pending() -> None:
        async with judge.session():
            jobs = [functools.partial(judge.ajudge, requests[index].messages, requests[index].parse) for index in pending]
            await run_bounded(jobs, judge.max_concurrency, save)

    try:
        run_sync(ask_pending())
    except JudgeError as failure:
        done = sum(judgment is not None for judgment in results)
        raise type(failure)(f"{failure}\n{done} of {len(requests)} judgments are saved in {cache.path}; rerun to resume from there") from failure
    return results  # type: ignore[return-value]
