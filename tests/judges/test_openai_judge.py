"""OpenAIJudge against a real local HTTP server: retries, timeouts, outages, unreadable replies, the API key, preflight."""

from __future__ import annotations

import itertools
import time

import pytest

from selalign.judges import JudgeRequestError, JudgeUnavailableError, OpenAIJudge, parse_mt_bench_rating
from support.stub_server import StubChatServer, StubReply

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Grade this."}]
PLANTED_KEY = "sk-planted-4f1d2c9e8b7a6d5c"


def scripted(*replies):
    """A reply function that plays ``replies`` in order, then repeats the last one."""
    script = itertools.chain(replies, itertools.repeat(replies[-1]))
    return lambda request: next(script)


def make_judge(server, **overrides):
    settings = dict(base_url=server.base_url, model="judge-model", api_key_env=None, timeout_s=5, max_retries=3)
    return OpenAIJudge(**{**settings, **overrides})


def test_retries_after_server_errors():
    with StubChatServer(scripted(StubReply("overloaded", 500), StubReply("slow down", 429), StubReply("bad gateway", 503), "Rating: [[7]]")) as server:
        judgment = make_judge(server).judge(MESSAGES, parse_mt_bench_rating)
    assert judgment.verdict == 7.0 and not judgment.is_error
    assert len(server.requests) == 4


def test_retry_after_header_sets_the_wait():
    with StubChatServer(scripted(StubReply("slow down", 429, headers={"Retry-After": "1.2"}), "Rating: [[3]]")) as server:
        started = time.monotonic()
        judgment = make_judge(server).judge(MESSAGES, parse_mt_bench_rating)
    assert judgment.verdict == 3.0 and len(server.requests) == 2
    assert 1.2 <= time.monotonic() - started < 5.0  # the server's wait, not the first backoff (at most 0.5 s)


def test_retries_after_a_timeout():
    with StubChatServer(scripted(StubReply("Rating: [[2]]", delay_s=1.5), "Rating: [[9]]")) as server:
        judgment = make_judge(server, timeout_s=0.3).judge(MESSAGES, parse_mt_bench_rating)
    assert judgment.verdict == 9.0
    assert len(server.requests) == 2


def test_outage_raises_after_retries():
    with StubChatServer(scripted(StubReply("down", 502))) as server:
        with pytest.raises(JudgeUnavailableError, match="failed 3 times.*HTTP 502"):
            make_judge(server, max_retries=2).judge(MESSAGES, parse_mt_bench_rating)
    assert len(server.requests) == 3


def test_connection_refused_is_an_outage():
    with StubChatServer(scripted("unused")) as server:
        base_url = server.base_url
    judge = OpenAIJudge(base_url=base_url, model="m", api_key_env=None, timeout_s=1, max_retries=1)
    with pytest.raises(JudgeUnavailableError, match="failed 2 times"):
        judge.complete(MESSAGES)


def test_client_errors_are_not_retried():
    with StubChatServer(scripted(StubReply("unknown model", 404))) as server:
        with pytest.raises(JudgeRequestError, match="HTTP 404: .*unknown model"):
            make_judge(server).judge(MESSAGES, parse_mt_bench_rating)
    assert len(server.requests) == 1


def test_unparseable_reply_is_asked_again():
    with StubChatServer(scripted("Looks fine to me.", "Hmm.", "Rating: [[6]]")) as server:
        judgment = make_judge(server, max_parse_attempts=3).judge(MESSAGES, parse_mt_bench_rating)
    assert (judgment.verdict, judgment.attempts, judgment.is_error) == (6.0, 3, False)


def test_unparseable_replies_end_as_an_error_not_a_score():
    with StubChatServer(scripted("Both are equally good.")) as server:
        judgment = make_judge(server, max_parse_attempts=3).judge(MESSAGES, parse_mt_bench_rating)
    assert judgment.verdict is None and judgment.is_error
    assert "no verdict" in judgment.error and judgment.attempts == 3
    assert judgment.raw == "Both are equally good."
    assert len(server.requests) == 3


def test_api_key_is_read_from_the_named_variable_at_call_time(monkeypatch):
    monkeypatch.delenv("SELALIGN_TEST_JUDGE_KEY", raising=False)
    with StubChatServer(scripted("Rating: [[5]]")) as server:
        judge = make_judge(server, api_key_env="SELALIGN_TEST_JUDGE_KEY")
        with pytest.raises(JudgeRequestError, match="SELALIGN_TEST_JUDGE_KEY is not set"):
            judge.complete(MESSAGES)
        assert server.requests == []
        monkeypatch.setenv("SELALIGN_TEST_JUDGE_KEY", PLANTED_KEY)
        assert judge.complete(MESSAGES) == "Rating: [[5]]"
    assert server.requests[0].authorization == f"Bearer {PLANTED_KEY}"
    assert server.requests[0].body == {"model": "judge-model", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 2048}
    assert PLANTED_KEY not in repr(judge) and PLANTED_KEY not in str(judge.identity) and PLANTED_KEY not in str(vars(judge))


def test_api_key_is_scrubbed_from_errors(monkeypatch):
    monkeypatch.setenv("SELALIGN_TEST_JUDGE_KEY", PLANTED_KEY)
    with StubChatServer(lambda request: StubReply(f"Incorrect API key provided: {PLANTED_KEY}", 401)) as server:
        with pytest.raises(JudgeRequestError, match="HTTP 401") as error:
            make_judge(server, api_key_env="SELALIGN_TEST_JUDGE_KEY").complete(MESSAGES)
    assert PLANTED_KEY not in str(error.value)


def test_no_authorization_header_without_a_key_variable():
    with StubChatServer(scripted("Rating: [[5]]")) as server:
        make_judge(server, api_key_env=None).complete(MESSAGES)
    assert server.requests[0].authorization is None
