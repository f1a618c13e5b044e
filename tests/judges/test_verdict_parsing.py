"""Every verdict form the judges accept, read from replies that travel through a real local HTTP server."""

from __future__ import annotations

import pytest

from selalign.judges import OpenAIJudge, parse_alpaca_eval_choice, parse_arena_hard_verdict, parse_mt_bench_rating
from support.stub_server import StubChatServer

MT_BENCH_REPLIES = [
    ("The answer is thorough. Rating: [[8]]", 8.0),
    ("Solid but short. Rating: [[7.5]]", 7.5),
    ("Rating: [[10]]", 10.0),
    ("Rating: [[1]]", 1.0),
    ("Rating: [6]", 6.0),
    ("Rating: 9", 9.0),
    ('Rating: [[4]] (the prompt\'s example was "Rating: [[5]]")', 4.0),
    ("<think>maybe [[2]]</think>Final. Rating: [[9]]", 9.0),
    ("Rating: [[0]]", None),
    ("Rating: [[11]]", None),
    ("I cannot rate this.", None),
    ("", None),
]

ARENA_HARD_REPLIES = [
    ("My final verdict is: [[A>>B]]", "A>>B"),
    ("My final verdict is: [[A>B]]", "A>B"),
    ("My final verdict is tie: [[A=B]]", "A=B"),
    ("My final verdict is: [[B>A]]", "B>A"),
    ("My final verdict is: [[B>>A]]", "B>>A"),
    ("Verdict: [A>>B]", "A>>B"),
    ("final verdict: [[a>b]]", "A>B"),
    ("[[B<<A]]", "A>>B"),
    ("[[B<A]]", "A>B"),
    ("[[B=A]]", "A=B"),
    ("[[A<B]]", "B>A"),
    ("[[A<<B]]", "B>>A"),
    ("At first [[A>B]], but after checking: [[B>>A]]", "B>>A"),
    ("<think>[[A>>B]]?</think>My final verdict is: [[B>A]]", "B>A"),
    ("[[A]]", None),
    ("Both answers are equally good.", None),
    ("", None),
]

ALPACA_EVAL_REPLIES = [("m", "m"), ("M", "M"), (" M\n", "M"), ("'m'", "m"), ("`M`.", "M"), ("m or M", None), ("Model M", None), ("", None)]


@pytest.fixture(scope="module")
def echo_judge():
    """A judge whose server replies with the user message it was sent."""
    with StubChatServer(lambda request: request["messages"][-1]["content"]) as server:
        yield OpenAIJudge(base_url=server.base_url, model="echo", api_key_env=None, max_parse_attempts=1, timeout_s=5)


@pytest.mark.parametrize(("reply", "expected"), MT_BENCH_REPLIES)
def test_mt_bench_rating(echo_judge, reply, expected):
    assert parse_mt_bench_rating(reply) == expected
    judgment = echo_judge.judge([{"role": "user", "content": reply}], parse_mt_bench_rating)
    assert (judgment.raw, judgment.verdict, judgment.is_error) == (reply, expected, expected is None)


@pytest.mark.parametrize(("reply", "expected"), ARENA_HARD_REPLIES)
def test_arena_hard_verdict(echo_judge, reply, expected):
    assert parse_arena_hard_verdict(reply) == expected
    judgment = echo_judge.judge([{"role": "user", "content": reply}], parse_arena_hard_verdict)
    assert (judgment.raw, judgment.verdict, judgment.is_error) == (reply, expected, expected is None)


@pytest.mark.parametrize(("reply", "expected"), ALPACA_EVAL_REPLIES)
def test_alpaca_eval_choice(echo_judge, reply, expected):
    assert parse_alpaca_eval_choice(reply) == expected
    judgment = echo_judge.judge([{"role": "user", "content": reply}], parse_alpaca_eval_choice)
    assert (judgment.raw, judgment.verdict, judgment.is_error) == (reply, expected, expected is None)
