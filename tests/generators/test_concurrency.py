"""run_bounded and run_sync: the limit, what happens after a failure, and calls from inside an event loop."""

from __future__ import annotations

import asyncio

import pytest

from selalign.generators.concurrency import run_bounded, run_sync


def test_at_most_limit_jobs_run_at_once_and_every_result_is_handed_over():
    running, peak, results = [0], [0], {}

    async def job(number):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1
        return number * number

    jobs = [lambda n=n: job(n) for n in range(10)]
    asyncio.run(run_bounded(jobs, 3, results.__setitem__))
    assert peak[0] == 3
    assert results == {n: n * n for n in range(10)}


def test_a_failure_starts_nothing_new_lets_running_jobs_finish_and_is_raised_unchanged():
    started, results = [], {}
    failure = KeyError("job 2 failed")

    async def job(number):
        started.append(number)
        await asyncio.sleep(0.05 if number == 3 else 0.01)
        if number == 2:
            raise failure
        return number

    jobs = [lambda n=n: job(n) for n in range(8)]
    with pytest.raises(KeyError) as raised:
        asyncio.run(run_bounded(jobs, 2, results.__setitem__))
    assert raised.value is failure
    assert started == [0, 1, 2, 3]  # 3 started when 1 finished, before 2 failed; nothing after
    assert results == {0: 0, 1: 1, 3: 3}  # the job running when 2 failed finished and was handed over


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="must be >= 1"):
        asyncio.run(run_bounded([], 0, print))


def test_run_sync_works_inside_a_running_event_loop():
    async def inner():
        await asyncio.sleep(0)
        return "done"

    async def outer():
        return run_sync(inner())  # as from a notebook cell

    assert run_sync(inner()) == "done"
    assert asyncio.run(outer()) == "done"
