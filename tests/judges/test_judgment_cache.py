"""judge_all + JudgmentCache against a real local HTTP server: resume without re-asking, outages, concurrency."""

from __future__ import annotations

import json
import threading
import time

import pytest

from selalign.judges import JudgeRequest, JudgeUnavailableError, JudgmentCache, OpenAIJudge, judge_all, parse_mt_bench_rating
from support.stub_server import StubChatServer, StubReply


def requests_for(count):
    return [JudgeRequest([{"role": "user", "content": f"Grade answer number {n}."}], parse_mt_bench_rating) for n in range(count)]


def rating_from_prompt(request):
    """Rating = (answer number mod 10) + 1, so every request has its own known verdict."""
    number = int(request["messages"][-1]["content"].split()[-1].rstrip("."))
    return f"Rating: [[{number % 10 + 1}]]"


def make_judge(server, **overrides):
    settings = dict(base_url=server.base_url, model="judge-model", api_key_env=None, timeout_s=5, max_retries=1, max_concurrency=4)
    return OpenAIJudge(**{**settings, **overrides})


def test_second_run_asks_nothing(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    with StubChatServer(rating_from_prompt) as server:
        first = judge_all(make_judge(server), requests_for(12), JudgmentCache(cache_path))
        assert len(server.requests) == 12
        second = judge_all(make_judge(server), requests_for(12), JudgmentCache(cache_path))
        assert len(server.requests) == 12
    assert [j.verdict for j in first] == [n % 10 + 1 for n in range(12)]
    assert second == first
    assert len(cache_path.read_text().splitlines()) == 12


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    outage = threading.Event()

    def fails_after_five_during_outage(request):
        if len(server.requests) > 5 and outage.is_set():
            return StubReply("service unavailable", 503)
        return rating_from_prompt(request)

    with StubChatServer(fails_after_five_during_outage) as server:
        outage.set()
        with pytest.raises(JudgeUnavailableError, match=r"5 of 10 judgments are saved in .*judgments.jsonl; rerun to resume"):
            judge_all(make_judge(server, max_concurrency=1), requests_for(10), JudgmentCache(cache_path))
        assert len(cache_path.read_text().splitlines()) == 5
        asked_before = len(server.requests)

        outage.clear()
        judgments = judge_all(make_judge(server, max_concurrency=1), requests_for(10), JudgmentCache(cache_path))
        assert len(server.requests) - asked_before == 5
    assert [j.verdict for j in judgments] == [n % 10 + 1 for n in range(10)]


def test_outage_with_concurrency_saves_what_finished(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"

    def dies_after_four(request):
        time.sleep(0.02)
        return rating_from_prompt(request) if int(request["messages"][-1]["content"].split()[-1].rstrip(".")) < 4 else StubReply("down", 500)

    with StubChatServer(dies_after_four) as server:
        with pytest.raises(JudgeUnavailableError, match="rerun to resume"):
            judge_all(make_judge(server, max_concurrency=2, max_retries=0), requests_for(40), JudgmentCache(cache_path))
    saved = [json.loads(line) for line in cache_path.read_text().splitlines()]
    assert sorted(row["verdict"] for row in saved) == [1.0, 2.0, 3.0, 4.0]  # the requests before the failing one, all finished
    assert len(server.requests) < 40  # queued requests were cancelled, not sent


def test_unreadable_replies_are_cached_as_errors(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    with StubChatServer(lambda request: "No rating from me.") as server:
        [judgment] = judge_all(make_judge(server, max_parse_attempts=2), requests_for(1), JudgmentCache(cache_path))
        [again] = judge_all(make_judge(server, max_parse_attempts=2), requests_for(1), JudgmentCache(cache_path))
    assert judgment.is_error and judgment.verdict is None and again == judgment
    assert len(server.requests) == 2


def test_a_different_judge_is_asked_again(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    with StubChatServer(rating_from_prompt) as server:
        judge_all(make_judge(server), requests_for(3), JudgmentCache(cache_path))
        judge_all(make_judge(server, model="other-judge"), requests_for(3), JudgmentCache(cache_path))
        judge_all(make_judge(server, max_concurrency=1, timeout_s=9), requests_for(3), JudgmentCache(cache_path))
    assert len(server.requests) == 6


def test_positions_are_part_of_the_key(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    messages = [{"role": "user", "content": "Grade answer number 1."}]
    swapped = [
        JudgeRequest(messages, parse_mt_bench_rating, {"A": "baseline", "B": "model"}),
        JudgeRequest(messages, parse_mt_bench_rating, {"A": "model", "B": "baseline"}),
    ]
    with StubChatServer(rating_from_prompt) as server:
        judge_all(make_judge(server), swapped, JudgmentCache(cache_path))
    assert len(server.requests) == 2


def test_torn_last_line_is_dropped_and_asked_again(tmp_path):
    cache_path = tmp_path / "judgments.jsonl"
    with StubChatServer(rating_from_prompt) as server:
        judge_all(make_judge(server), requests_for(3), JudgmentCache(cache_path))
        lines = cache_path.read_text().splitlines(keepends=True)
        cache_path.write_text("".join(lines[:2]) + lines[2][:25])
        judgments = judge_all(make_judge(server), requests_for(3), JudgmentCache(cache_path))
    assert len(server.requests) == 4
    assert [j.verdict for j in judgments] == [1.0, 2.0, 3.0]
    assert all(json.loads(line) for line in cache_path.read_text().splitlines())


def test_concurrency_is_bounded(tmp_path):
    lock = threading.Lock()
    in_flight, peak = [0], [0]

    def slow(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return rating_from_prompt(request)

    with StubChatServer(slow) as server:
        judge_all(make_judge(server, max_concurrency=3), requests_for(12), JudgmentCache(tmp_path / "judgments.jsonl"))
    assert 1 < peak[0] <= 3
