"""GenerateAndJudge on a tiny policy against a real local HTTP judge: files written, metrics, reruns."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from selalign.benchmarks import AlpacaEval, ArenaHard, EvalContext, read_records
from selalign.benchmarks.runner import GenerateAndJudge
from selalign.judges import OpenAIJudge
from selalign.models import load_causal_lm, load_tokenizer
from support.stub_server import StubChatServer, benchmark_verdict


@pytest.fixture(scope="module")
def context_for(tiny_lm):
    policy, tokenizer = load_causal_lm(str(tiny_lm)), load_tokenizer(str(tiny_lm))
    model_cfg = OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(tiny_lm), "dtype": "float32"})
    return lambda run_dir: EvalContext(policy, tokenizer, run_dir, model_cfg)


@pytest.mark.parametrize("bench", [ArenaHard(), AlpacaEval()], ids=lambda bench: bench.name)
def test_pairwise_benchmark_end_to_end(bench, context_for, tmp_path):
    with StubChatServer(benchmark_verdict) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="judge", api_key_env=None, timeout_s=5)
        runner = GenerateAndJudge(bench, judge, limit=2, max_new_tokens=3, default_temperature=0.5, cache_dir=tmp_path / "caches")
        metrics = runner.evaluate(context_for(tmp_path / "run"))
        assert len(server.requests) == 2 * 2  # two prompts, both orders
        assert runner.evaluate(context_for(tmp_path / "rerun")) == metrics
        assert len(server.requests) == 4  # the shared caches answer the rerun

    name = bench.name
    assert metrics[f"{name}/win_rate"] == 50.0  # a fixed position always wins: one game each way
    if name == "arena_hard":
        assert metrics["arena_hard/ci_low"] <= 50.0 <= metrics["arena_hard/ci_high"]
    generations = [json.loads(line) for line in (tmp_path / "run" / f"{name}_generations.jsonl").read_text().splitlines()]
    assert [row["temperature"] for row in generations] == [0.5, 0.5]
    assert all(len(row["answers"]) == len(row["turns"]) == 1 for row in generations)
    records = read_records(tmp_path / "run" / f"{name}_judgments.jsonl")
    assert len(records) == 4 and all(record.raw for record in records)
    assert sorted(path.name for path in (tmp_path / "caches").iterdir()) == [f"{name}_generation_cache.jsonl", f"{name}_judgment_cache.jsonl"]
