"""All three benchmarks end to end through a real local HTTP server, the way a runner drives them."""

from __future__ import annotations

import re

from selalign.benchmarks import AlpacaEval, ArenaHard, MTBench, read_records, write_records
from selalign.judges import OpenAIJudge
from support.stub_server import StubChatServer, benchmark_verdict

PLANTED_KEY = "sk-live-planted-9a8b7c6d5e4f3a2b1c0d"


def test_runner_flow_writes_no_api_key_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("SELALIGN_JUDGE_API_KEY", PLANTED_KEY)
    metrics = {}
    with StubChatServer(benchmark_verdict) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="judge", api_key_env="SELALIGN_JUDGE_API_KEY", max_concurrency=4, timeout_s=5)
        for bench in (MTBench(), ArenaHard(), AlpacaEval()):
            name = bench.name
            items = bench.load(limit=3)
            answers = {item.id: [f"answer to turn {turn + 1}" for turn in range(len(item.turns))] for item in items}
            records = bench.judge(items, answers, judge, tmp_path / "cache" / f"{name}.jsonl")
            write_records(tmp_path / "records" / f"{name}.jsonl", records)
            assert read_records(tmp_path / "records" / f"{name}.jsonl") == records
            metrics.update(bench.aggregate(records))

    assert len(server.requests) == 3 * 2 * 3
    assert {request.authorization for request in server.requests} == {f"Bearer {PLANTED_KEY}"}
    assert metrics["mt_bench/score"] == 7.0 and metrics["mt_bench/writing"] == 7.0
    assert metrics["arena_hard/win_rate"] == 50.0 and metrics["alpaca_eval/win_rate"] == 50.0

    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) == 6
    for path in written:
        content = path.read_bytes()
        assert PLANTED_KEY.encode() not in content, path
        assert re.search(rb"sk-live-planted", content) is None, path
