"""GenerateAndJudge on a tiny policy against a real local HTTP judge: files written, metrics, reruns, generators, preflight."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from selalign.benchmarks import AlpacaEval, ArenaHard, EvalContext, MTBench, read_records
from selalign.benchmarks.runner import GenerateAndJudge
from selalign.generators.openai import OpenAIGenerator
from selalign.judges import JudgeRequestError, JudgeUnavailableError, OpenAIJudge
from selalign.models import load_causal_lm, load_tokenizer
from support.stub_server import StubChatServer, StubReply, benchmark_verdict, echo_reply


@pytest.fixture(scope="module")
def model_cfg(tiny_lm):
    return OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(tiny_lm), "dtype": "float32"})


@pytest.fixture(scope="module")
def context_for(tiny_lm, model_cfg):
    policy, tokenizer = load_causal_lm(str(tiny_lm)), load_tokenizer(str(tiny_lm))
    return lambda run_dir: EvalContext(policy, tokenizer, run_dir, model_cfg)


@pytest.mark.parametrize("bench", [ArenaHard(), AlpacaEval()], ids=lambda bench: bench.name)
def test_pairwise_benchmark_end_to_end(bench, context_for, tmp_path):
    with StubChatServer(benchmark_verdict) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="judge", api_key_env=None, timeout_s=5)
        runner = GenerateAndJudge(bench, judge, cache_dir=tmp_path / "caches", limit=2, max_new_tokens=3, default_temperature=0.5)
        metrics = runner.evaluate(context_for(tmp_path / "run"))
        assert len(server.requests) == 2 * 2  # two prompts, both orders
        assert runner.evaluate(context_for(tmp_path / "rerun")) == metrics
        assert len(server.requests) == 4  # the shared caches answer the rerun
        assert len(server.model_lists) == 1  # the judge was checked once, before the first answer was generated

    name = bench.name
    assert metrics[f"{name}/win_rate"] == 50.0  # a fixed position always wins: one game each way
    if name == "arena_hard":
        assert metrics["arena_hard/ci_low"] <= 50.0 <= metrics["arena_hard/ci_high"]
    generations = [json.loads(line) for line in (tmp_path / "run" / f"{name}_generations.jsonl").read_text().splitlines()]
    assert [row["temperature"] for row in generations] == [0.5, 0.5] and {json.dumps(row["generator"]) for row in generations} == {'{"engine": "hf"}'}
    assert all(len(row["answers"]) == len(row["turns"]) == 1 for row in generations)
    assert (tmp_path / "rerun" / f"{name}_generations.jsonl").read_text() == (tmp_path / "run" / f"{name}_generations.jsonl").read_text()
    records = read_records(tmp_path / "run" / f"{name}_judgments.jsonl")
    assert len(records) == 4 and all(record.raw for record in records)
    [generation_cache] = (tmp_path / "caches" / "generations" / name).iterdir()
    [judgment_cache] = (tmp_path / "caches" / "judgments" / name).iterdir()
    assert generation_cache.name == judgment_cache.name and generation_cache.name.startswith("tiny_lm")
    assert len(generation_cache.read_text().splitlines()) == 2 and len(judgment_cache.read_text().splitlines()) == 4


def test_answers_come_from_the_context_generator_without_the_policy_in_memory(model_cfg, tmp_path):
    """MT-Bench with the openai generator: both turns asked of the policy's endpoint, the second after the first answer."""
    with StubChatServer(echo_reply) as policy_server, StubChatServer(benchmark_verdict) as judge_server:
        generator = OpenAIGenerator(policy_server.base_url, "policy", max_concurrency=4, timeout_s=5)
        judge = OpenAIJudge(base_url=judge_server.base_url, model="judge", api_key_env=None, timeout_s=5)
        runner = GenerateAndJudge(MTBench(), judge, cache_dir=tmp_path / "caches", limit=3, max_new_tokens=16)
        context = EvalContext(None, None, tmp_path / "run", model_cfg, generator=generator)
        metrics = runner.evaluate(context)
        assert len(policy_server.requests) == 3 * 2 and len(judge_server.requests) == 3 * 2
        runner.evaluate(EvalContext(None, None, tmp_path / "rerun", model_cfg, generator=generator))
        assert len(policy_server.requests) == 6 and len(judge_server.requests) == 6
    questions = MTBench().load(limit=3)
    rows = [json.loads(line) for line in (tmp_path / "run" / "mt_bench_generations.jsonl").read_text().splitlines()]
    assert [row["answers"] for row in rows] == [[f"answer 1 to: {q.turns[0]}", f"answer 2 to: {q.turns[1]}"] for q in questions]
    assert {request.body["temperature"] for request in policy_server.requests} == {q.temperature for q in questions}
    assert metrics["mt_bench/score"] == 7.0


def test_a_judge_without_its_key_fails_before_any_answer_is_generated(model_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("SELALIGN_TEST_UNSET_KEY", raising=False)
    with StubChatServer(echo_reply) as policy_server, StubChatServer(benchmark_verdict) as judge_server:
        generator = OpenAIGenerator(policy_server.base_url, "policy", timeout_s=5)
        judge = OpenAIJudge(base_url=judge_server.base_url, model="judge", api_key_env="SELALIGN_TEST_UNSET_KEY", timeout_s=5)
        runner = GenerateAndJudge(AlpacaEval(), judge, cache_dir=tmp_path / "caches", limit=2)
        with pytest.raises(JudgeRequestError, match="SELALIGN_TEST_UNSET_KEY is not set"):
            runner.evaluate(EvalContext(None, None, tmp_path / "run", model_cfg, generator=generator))
    assert policy_server.requests == [] and judge_server.model_lists == [] and not (tmp_path / "caches").exists()


def test_a_judge_failure_after_generation_says_how_to_resume(model_cfg, tmp_path):
    with StubChatServer(echo_reply) as policy_server, StubChatServer(lambda request: StubReply("down", 503)) as judge_server:
        generator = OpenAIGenerator(policy_server.base_url, "policy", timeout_s=5)
        judge = OpenAIJudge(base_url=judge_server.base_url, model="judge", api_key_env=None, timeout_s=5, max_retries=0, max_concurrency=1)
        runner = GenerateAndJudge(AlpacaEval(), judge, cache_dir=tmp_path / "caches", limit=2)
        with pytest.raises(JudgeUnavailableError, match=(
            r"0 of 4 judgments are saved in .*; rerun to resume from there\nthe caches in .*caches keep what is done: "
            rf"`python -m selalign.evaluate benchmark=alpaca_eval model.name_or_path={model_cfg.name_or_path}` with the same model settings"
        )):
            runner.evaluate(EvalContext(None, None, tmp_path / "run", model_cfg, generator=generator))
    assert len([*(tmp_path / "caches" / "generations" / "alpaca_eval").iterdir()][0].read_text().splitlines()) == 2
