"""One way to run many requests at once, shared by the ``openai`` generator and the judges.

``run_bounded(jobs, limit, on_result)`` awaits the coroutine functions ``jobs`` with at most ``limit`` running at
once and hands each result to ``on_result(index, result)`` the moment it arrives (where callers save it). When a job
raises, no further job is started, those already running finish (and their results are still handed over), and the
first exception is raised again. ``run_sync`` runs a coroutine to completion from synchronous code, also when the
calling thread already runs an event loop (a notebook).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


async def run_bounded(jobs: Sequence[Callable[[], Awaitable[T]]], limit: int, on_result: Callable[[int, T], None]) -> None:
    """Run ``jobs`` (in order of submission) at most ``limit`` at a time; see the module docstring."""
    if limit < 1:
        raise ValueError(f"the concurrency limit must be >= 1, got {limit}")
    semaphore = asyncio.Semaphore(limit)
    failures: list[BaseException] = []

    async def run(index: int, job: Callable[[], Awaitable[T]]) -> None:
        async with semaphore:
            if failures:
                return  # a job failed: start nothing new
            try:
                on_result(index, await job())
            except Exception as error:  # noqa: BLE001 (the first failure is raised again below)
                failures.append(error)

    await asyncio.gather(*(run(index, job) for index, job in enumerate(jobs)))
    if failures:
        raise failures[0]


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``, in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="selalign-async") as pool:
        return pool.submit(asyncio.run, coroutine).result()
