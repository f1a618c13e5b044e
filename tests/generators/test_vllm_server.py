"""The vllm_server generator's process handling, with tests/support/stub_server.py standing in for `vllm serve`:
free port, health wait, answers through the OpenAI API, shutdown after the call, the session and errors, and the
clear errors of a missing executable and of a server that dies or never becomes healthy."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from selalign.data.formats import render_prompt
from selalign.generators import GenerationCache, GenerationError, Policy, Sampling
from selalign.generators.vllm_server import PLAIN_CHAT_TEMPLATE, SERVED_MODEL_NAME, VLLMServerGenerator
from selalign.models import load_tokenizer
from support.configs import REPO

FAKE_SERVE = [sys.executable, str(REPO / "tests" / "support" / "stub_server.py")]
QUESTIONS = [[{"role": "user", "content": f"Question {n}?"}] for n in range(5)]


class Fake:
    """Files the stand-in server writes: its PIDs (one per start), its argument lists and the requests it got."""

    def __init__(self, folder: Path) -> None:
        self.pids, self.argvs, self.requests = folder / "pids.txt", folder / "argv.jsonl", folder / "requests.jsonl"

    def args(self, *more: str) -> list[str]:
        return ["--fake-pid-file", str(self.pids), "--fake-argv-file", str(self.argvs), "--fake-request-log", str(self.requests), *more]

    def started(self) -> list[int]:
        return [int(line) for line in self.pids.read_text().split()] if self.pids.exists() else []

    def argv(self) -> list[str]:
        return json.loads(self.argvs.read_text().splitlines()[-1])

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self.requests.read_text().splitlines()] if self.requests.exists() else []


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


def make_generator(fake, tmp_path, *fake_args, **overrides):
    settings = dict(command=FAKE_SERVE, extra_args=fake.args(*fake_args), log_dir=str(tmp_path / "server"), startup_timeout_s=30, max_retries=0, stop_timeout_s=5)
    return VLLMServerGenerator(**{**settings, **overrides})


def policy_of(folder) -> Policy:
    return Policy.from_config({"name_or_path": str(folder), "dtype": "float32"}, tokenizer=load_tokenizer(str(folder)))


def test_serves_the_policy_on_a_free_port_answers_and_stops(fake, tmp_path, tiny_chat_lm):
    generator = make_generator(fake, tmp_path, dtype="bfloat16", max_concurrency=3)
    answers = generator.generate(policy_of(tiny_chat_lm), QUESTIONS, Sampling(max_new_tokens=9, temperature=0.3, seed=2))
    assert answers == [f"answer 1 to: Question {n}?" for n in range(5)]

    argv = fake.argv()
    port = int(argv[argv.index("--port") + 1])
    assert argv[0] == str(tiny_chat_lm) and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--served-model-name") + 1] == SERVED_MODEL_NAME and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert "--chat-template" not in argv  # the tokenizer's own template is used
    bodies = fake.received()
    assert len(bodies) == 5 and {(b["model"], b["max_tokens"], b["temperature"], b["seed"]) for b in bodies} == {(SERVED_MODEL_NAME, 9, 0.3, 2)}
    [pid] = fake.started()
    assert not is_running(pid) and not listens(port)  # stopped once the call ended


def test_a_policy_without_a_chat_template_is_served_with_the_plain_format(fake, tmp_path, tiny_lm):
    generator = make_generator(fake, tmp_path)
    generator.generate(policy_of(tiny_lm), QUESTIONS[:1], Sampling(4))
    argv = fake.argv()
    template = Path(argv[argv.index("--chat-template") + 1])
    assert template.read_text() == PLAIN_CHAT_TEMPLATE


def test_the_plain_chat_template_renders_what_training_rendered(tiny_lm):
    tokenizer = load_tokenizer(str(tiny_lm))
    assert not tokenizer.chat_template
    for conversation in (
        QUESTIONS[0],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Colour?"}],
    ):
        rendered = tokenizer.apply_chat_template(conversation, chat_template=PLAIN_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True)
        assert rendered == render_prompt(tokenizer, conversation)
    assert rendered == "<bos>System: Be brief.\nUser: Hi?\nAssistant: Hello.\nUser: Colour?\nAssistant:"


def test_one_server_per_session_and_multi_turn_messages(fake, tmp_path, tiny_chat_lm):
    generator = make_generator(fake, tmp_path)
    policy = policy_of(tiny_chat_lm)
    with generator.session():
        answers = generator.answer_turns(policy, [["Cat?", "Dog?"], ["Owl?"]], Sampling(8))
        generator.generate(policy, QUESTIONS[:2], Sampling(8, temperature=0.7))
        [pid] = fake.started()
        assert is_running(pid)
    assert not is_running(pid)
    assert answers == [["answer 1 to: Cat?", "answer 2 to: Dog?"], ["answer 1 to: Owl?"]]
    second_turn = [body["messages"] for body in fake.received() if len(body["messages"]) > 1]
    assert second_turn == [[{"role": "user", "content": "Cat?"}, {"role": "assistant", "content": "answer 1 to: Cat?"}, {"role": "user", "content": "Dog?"}]]

    generator.generate(policy, QUESTIONS[:1], Sampling(8))
    generator.generate(policy, QUESTIONS[:1], Sampling(8))
    assert len(fake.started()) == 3  # outside a session, every call starts and stops its own server


def test_a_cache_that_holds_every_answer_starts_no_server(fake, tmp_path, tiny_chat_lm):
    policy = policy_of(tiny_chat_lm)
    cache = lambda: GenerationCache(tmp_path / "answers.jsonl", policy.identity)  # noqa: E731
    first = make_generator(fake, tmp_path).generate(policy, QUESTIONS, Sampling(8), cache())
    again = make_generator(fake, tmp_path).generate(policy, QUESTIONS, Sampling(8), cache())
    assert again == first and len(fake.started()) == 1 and len(fake.received()) == 5


def test_the_server_is_stopped_when_generation_fails(fake, tmp_path, tiny_chat_lm):
    generator = make_generator(fake, tmp_path, "--fake-chat-status", "500")
    with pytest.raises(GenerationError, match=r"failed 1 time in a row; last failure: HTTP 500: acted-out server error\n0 of 5 answers were generated; none are kept"):
        generator.generate(policy_of(tiny_chat_lm), QUESTIONS, Sampling(8))
    [pid] = fake.started()
    assert not is_running(pid)

    with pytest.raises(GenerationError, match="HTTP 500"):
        with generator.session():
            generator.generate(policy_of(tiny_chat_lm), QUESTIONS, Sampling(8))
    assert not any(is_running(pid) for pid in fake.started())


def test_a_missing_executable_is_named_at_once():
    with pytest.raises(FileNotFoundError, match=r"generator=vllm_server runs `selalign-no-such-vllm serve`, but 'selalign-no-such-vllm' is not an executable on PATH: install vLLM \(pip install vllm"):
        VLLMServerGenerator(command=["selalign-no-such-vllm", "serve"])


def test_a_server_that_exits_before_it_is_healthy_is_reported_with_its_log(fake, tmp_path, tiny_chat_lm):
    generator = make_generator(fake, tmp_path, "--fake-exit-code", "3")
    with pytest.raises(GenerationError, match=r"exited with code 3 before it was healthy; the end of its log .*vllm_server.log:\n(.|\n)*CUDA out of memory"):
        generator.generate(policy_of(tiny_chat_lm), QUESTIONS, Sampling(8))
    assert fake.received() == []


def test_a_server_that_never_becomes_healthy_is_stopped_after_the_timeout(fake, tmp_path, tiny_chat_lm):
    generator = make_generator(fake, tmp_path, "--fake-never-healthy", startup_timeout_s=1.5)
    with pytest.raises(GenerationError, match=r"was not healthy at http://127.0.0.1:\d+/health after 2 s"):
        with generator.session():
            generator.generate(policy_of(tiny_chat_lm), QUESTIONS, Sampling(8))
    [pid] = fake.started()
    assert not is_running(pid) and fake.received() == []
