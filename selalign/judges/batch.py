"""Judging many prompts with bounded concurrency, through the on-disk cache.

``judge_all`` answers every request from the cache when it can and asks the judge only for the rest, running up to
``judge.max_concurrency`` requests at once. Each judgment is written to the cache as soon as it arrives. When the
judge fails outright (``JudgeError``: outage after retries, refused request), no new requests are started, the ones
in flight are finished and saved, and the error is raised again with how much was saved: rerunning resumes there.
Any other exception from a request (a bug, not an outage) stops the run the same way and is re-raised unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

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

    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=judge.max_concurrency, thread_name_prefix="judge") as pool:
        futures: dict[Future[Judgment], int] = {pool.submit(judge.judge, requests[i].messages, requests[i].parse): i for i in pending}
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if failure is None:
                        failure = error
                        _cancel_queued(futures)
                    continue
                index = futures[future]
                judgment = future.result()
                cache.put(keys[index], judgment, identity, requests[index].positions)
                results[index] = judgment
        finally:
            _cancel_queued(futures)

    if isinstance(failure, JudgeError):
        done = sum(judgment is not None for judgment in results)
        raise type(failure)(f"{failure}\n{done} of {len(requests)} judgments are saved in {cache.path}; rerun to resume from there") from failure
    if failure is not None:
        raise failure
    return results  # type: ignore[return-value]


def _cancel_queued(futures: dict[Future[Judgment], int]) -> None:
    """Cancel requests not started yet; those already running finish (and are saved by the caller)."""
    for future in futures:
        future.cancel()
