"""AlpacaEval: the annotator prompt, position swapping through a real local HTTP server, win rate by hand."""

from __future__ import annotations

import pytest

from selalign.benchmarks import AlpacaEval, JudgmentRecord
from selalign.benchmarks.alpaca_eval import SYSTEM_PROMPT
from selalign.judges import OpenAIJudge
from support.stub_server import StubChatServer

MODEL_MARK = "<model output>"


def run(reply, tmp_path, limit=5):
    bench = AlpacaEval()
    items = bench.load(limit=limit)
    answers = {item.id: [f"{MODEL_MARK} {item.id}"] for item in items}
    with StubChatServer(reply) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="annotator", api_key_env=None, max_concurrency=2, timeout_s=5)
        records = bench.judge(items, answers, judge, tmp_path / "alpaca_eval_judgments.jsonl")
    return server, records, bench.aggregate(records)


def test_prompt_shows_instruction_and_both_outputs():
    item = AlpacaEval().load(limit=1)[0]
    system, user = AlpacaEval().judge_messages(item, "OUT-1", "OUT-2")
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert f'"instruction": """{item.instruction}""",' in user["content"]
    first, second = '"model_identifier": "m",\n        "output": """OUT-1"""', '"model_identifier": "M",\n        "output": """OUT-2"""'
    assert user["content"].index(first) < user["content"].index(second)
    assert user["content"].endswith("## Best Model Identifier")


@pytest.mark.parametrize("choice", ["m", "M"])
def test_a_judge_with_a_fixed_position_preference_gives_50_percent(tmp_path, choice):
    server, records, metrics = run(lambda request: choice, tmp_path)
    assert len(server.requests) == 10 and [r.model_position for r in records] == ["B", "A"] * 5
    assert metrics["alpaca_eval/win_rate"] == 50.0 and metrics["alpaca_eval/num_instructions"] == 5


def test_a_judge_that_prefers_the_model_gives_100_percent(tmp_path):
    def prefers_model(request):
        content = request["messages"][-1]["content"]
        return "m" if content.index(MODEL_MARK) < content.index('"model_identifier": "M"') else "M"

    _, records, metrics = run(prefers_model, tmp_path)
    assert metrics["alpaca_eval/win_rate"] == 100.0
    assert {r.baseline for r in records} == {"gpt4_1106_preview"}


def game(item_id, position, verdict):
    return JudgmentRecord("alpaca_eval", item_id, "vicuna", verdict, verdict or "?", None if verdict else "no verdict", model_position=position)


def test_win_rate_by_hand():
    records = [
        game("0", "B", "M"), game("0", "A", "m"),  # model preferred twice: 1
        game("1", "B", "m"), game("1", "A", "m"),  # split decision, a tie: 0.5
        game("2", "B", "m"), game("2", "A", "M"),  # baseline preferred twice: 0
        game("3", "B", None), game("3", "A", "m"),  # unreadable game: instruction left out
    ]
    metrics = AlpacaEval().aggregate(records)
    assert metrics == {
        "alpaca_eval/win_rate": pytest.approx(100 * 1.5 / 3),
        "alpaca_eval/num_instructions": 3.0,
        "alpaca_eval/num_incomplete": 1.0,
        "alpaca_eval/num_errors": 1.0,
    }
