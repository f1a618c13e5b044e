"""The openai generator against a real local HTTP server: requests, concurrency, retries, resume, multi-turn, the key."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from selalign.generators import GenerationCache, GenerationError, Policy, Sampling
from selalign.generators.openai import OpenAIGenerator
from support.stub_server import StubChatServer, StubReply, echo_reply

PLANTED_KEY = "sk-planted-generator-7c6b5a49382716"
KEY_ENV = "SELALIGN_TEST_GENERATOR_KEY"
IDENTITY = {"name_or_path": "/models/policy", "dtype": "float32"}
POLICY = Policy("/models/policy", IDENTITY)


def questions(count):
    return [[{"role": "user", "content": f"Question {n}?"}] for n in range(count)]


def make_generator(server, **overrides):
    settings = dict(base_url=server.base_url, model="policy", api_key_env=None, max_concurrency=4, timeout_s=5, max_retries=1)
    return OpenAIGenerator(**{**settings, **overrides})


def scripted(*replies):
    script = itertools.chain(replies, itertools.repeat(replies[-1]))
    lock = threading.Lock()

    def reply(request):
        with lock:
            return next(script)

    return reply


def test_each_conversation_is_one_request_with_the_sampling_settings():
    with StubChatServer(echo_reply) as server:
        generator = make_generator(server, request_params={"top_p": 0.9, "top_k": 20})
        answers = generator.generate(POLICY, questions(3), Sampling(max_new_tokens=7, temperature=0.5, seed=11))
    assert answers == [f"answer 1 to: Question {n}?" for n in range(3)]
    bodies = sorted((request.body for request in server.requests), key=lambda body: body["messages"][0]["content"])
    assert bodies[0] == {
        "model": "policy", "messages": [{"role": "user", "content": "Question 0?"}], "max_tokens": 7, "temperature": 0.5, "seed": 11,
        "top_p": 0.9, "top_k": 20,
    }
    assert {request.authorization for request in server.requests} == {None}


def test_concurrency_is_bounded():
    lock = threading.Lock()
    in_flight, peak = [0], [0]

    def slow(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return echo_reply(request)

    with StubChatServer(slow) as server:
        answers = make_generator(server, max_concurrency=3).generate(POLICY, questions(15), Sampling(8))
    assert 1 < peak[0] <= 3
    assert answers == [f"answer 1 to: Question {n}?" for n in range(15)]  # in order, whatever order they arrived in


def test_failed_requests_are_retried():
    with StubChatServer(scripted(StubReply("overloaded", 503), StubReply("slow down", 429), "Fine.")) as server:
        [answer] = make_generator(server, max_retries=2).generate(POLICY, questions(1), Sampling(8))
    assert answer == "Fine." and len(server.requests) == 3


def test_an_outage_stops_with_a_clear_error_and_a_rerun_resumes(tmp_path):
    outage = threading.Event()

    def fails_during_outage(request):
        if outage.is_set() and request["messages"][-1]["content"] != "Question 0?":
            return StubReply("bad gateway", 502)
        return echo_reply(request)

    cache_path = tmp_path / "answers.jsonl"
    with StubChatServer(fails_during_outage) as server:
        outage.set()
        with pytest.raises(GenerationError, match=r"failed 2 times in a row; last failure: HTTP 502: bad gateway\n1 of 4 new answers are saved in .*answers.jsonl") as error:
            make_generator(server, max_concurrency=1).generate(POLICY, questions(4), Sampling(8), GenerationCache(cache_path, IDENTITY))
        assert "Question 1?" in server.requests[1].body["messages"][0]["content"]
        assert len(server.requests) == 1 + 2  # the first answer, then one request asked twice; nothing after it
        rows = [json.loads(line) for line in cache_path.read_text().splitlines()]
        assert [row["answer"] for row in rows] == ["answer 1 to: Question 0?"]  # no empty answer stands in for the failed ones

        outage.clear()
        answers = make_generator(server).generate(POLICY, questions(4), Sampling(8), GenerationCache(cache_path, IDENTITY))
        assert len(server.requests) == 3 + 3  # only the three missing answers are asked
    assert answers == [f"answer 1 to: Question {n}?" for n in range(4)]


def test_resume_asks_nothing_twice(tmp_path):
    cache_path = tmp_path / "answers.jsonl"
    with StubChatServer(echo_reply) as server:
        first = make_generator(server).generate(POLICY, questions(5), Sampling(8), GenerationCache(cache_path, IDENTITY))
        second = make_generator(server).generate(POLICY, questions(5), Sampling(8), GenerationCache(cache_path, IDENTITY))
        assert second == first and len(server.requests) == 5
        make_generator(server).generate(POLICY, questions(5), Sampling(8, seed=1), GenerationCache(cache_path, IDENTITY))
        make_generator(server, model="other").generate(POLICY, questions(5), Sampling(8), GenerationCache(cache_path, IDENTITY))
        assert len(server.requests) == 15  # another seed or served model is asked anew
    assert len(cache_path.read_text().splitlines()) == 15


def test_second_turn_messages_hold_the_first_answer():
    turns = [["What colour is the cat?", "And the dog?"], ["What colour is the owl?"]]
    with StubChatServer(echo_reply) as server:
        answers = make_generator(server).answer_turns(POLICY, turns, Sampling(8))
    assert answers == [["answer 1 to: What colour is the cat?", "answer 2 to: And the dog?"], ["answer 1 to: What colour is the owl?"]]
    second_turn = [request.body["messages"] for request in server.requests if len(request.body["messages"]) > 1]
    assert second_turn == [[
        {"role": "user", "content": "What colour is the cat?"},
        {"role": "assistant", "content": "answer 1 to: What colour is the cat?"},
        {"role": "user", "content": "And the dog?"},
    ]]


def test_a_reply_without_content_is_an_error_not_an_empty_answer(tmp_path):
    with StubChatServer(lambda request: StubReply(None)) as server:
        with pytest.raises(GenerationError, match="without text content"):
            make_generator(server).generate(POLICY, questions(2), Sampling(8), GenerationCache(tmp_path / "answers.jsonl", IDENTITY))
    assert not (tmp_path / "answers.jsonl").exists() or (tmp_path / "answers.jsonl").read_text() == ""


def test_the_key_is_sent_and_written_nowhere(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with StubChatServer(echo_reply) as server:
        generator = make_generator(server, api_key_env=KEY_ENV)
        with pytest.raises(GenerationError, match=f"{KEY_ENV} is not set"):
            generator.generate(POLICY, questions(2), Sampling(8))
        assert server.requests == []
        monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
        generator.generate(POLICY, questions(2), Sampling(8), GenerationCache(tmp_path / "answers.jsonl", IDENTITY))
    assert {request.authorization for request in server.requests} == {f"Bearer {PLANTED_KEY}"}
    assert PLANTED_KEY not in (tmp_path / "answers.jsonl").read_text()
    assert PLANTED_KEY not in repr(generator) + str(generator.identity) + str(vars(generator)) + str(vars(generator.endpoint))

    with StubChatServer(lambda request: StubReply(f"Incorrect API key provided: {PLANTED_KEY}", 401)) as server:
        with pytest.raises(GenerationError, match="refused the request with HTTP 401") as error:
            make_generator(server, api_key_env=KEY_ENV).generate(POLICY, questions(1), Sampling(8))
    assert PLANTED_KEY not in str(error.value) and len(server.requests) == 1  # refused requests are not retried


def test_request_params_cannot_override_the_sampling():
    with pytest.raises(ValueError, match=r"request_params cannot set \['temperature'\]"):
        OpenAIGenerator("http://127.0.0.1:9/v1", "policy", request_params={"temperature": 1.0, "top_p": 0.9})
