"""MT-Bench judge prompts, judging through a real local HTTP server, and aggregation against hand-computed values."""

from __future__ import annotations

import re

import pytest

from selalign.benchmarks import JudgmentRecord, MTBench
from selalign.judges import OpenAIJudge
from support.stub_server import StubChatServer


@pytest.fixture(scope="module")
def questions():
    return {q.id: q for q in MTBench().load()}


def test_turn_1_prompt_of_a_general_question(questions):
    system, user = MTBench().judge_messages(questions["81"], ["My Hawaii post.", "A rewrite."], turn=1)
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    assert user["role"] == "user"
    assert user["content"].startswith("[Instruction]\nPlease act as an impartial judge")
    expected = f"[Question]\n{questions['81'].turns[0]}\n\n[The Start of Assistant's Answer]\nMy Hawaii post.\n[The End of Assistant's Answer]"
    assert expected in user["content"]
    assert "A rewrite." not in user["content"]


def test_turn_2_prompt_of_a_math_question_carries_both_references(questions):
    question = questions["111"]
    assert question.category == "math"
    system, user = MTBench().judge_messages(question, ["First answer.", "Second answer."], turn=2)
    assert "focus on the assistant's answer to the second question" in system["content"]
    content = user["content"]
    for text in (*question.turns, *question.reference, "First answer.", "Second answer."):
        assert text in content
    assert content.index("<|The Start of Reference Answer|>") < content.index("<|The Start of Assistant A's Conversation with User|>")


def test_answers_with_braces_are_inserted_verbatim(questions):
    _, user = MTBench().judge_messages(questions["121"], ["def f(): return {'a': 1}", "{x}"], turn=2)
    assert "def f(): return {'a': 1}" in user["content"] and "### Assistant A:\n{x}" in user["content"]


def test_aggregation_by_hand():
    records = [
        JudgmentRecord("mt_bench", "81", "writing", 9.0, "Rating: [[9]]", turn=1),
        JudgmentRecord("mt_bench", "81", "writing", 7.0, "Rating: [[7]]", turn=2),
        JudgmentRecord("mt_bench", "111", "math", 4.0, "Rating: [[4]]", turn=1),
        JudgmentRecord("mt_bench", "111", "math", None, "no idea", error="no verdict found", turn=2),
        JudgmentRecord("mt_bench", "131", "stem", 5.5, "Rating: [[5.5]]", turn=1),
        JudgmentRecord("mt_bench", "131", "stem", 10.0, "Rating: [[10]]", turn=2),
    ]
    metrics = MTBench().aggregate(records)
    assert metrics == pytest.approx({
        "mt_bench/score": (9 + 7 + 4 + 5.5 + 10) / 5,
        "mt_bench/turn_1": (9 + 4 + 5.5) / 3,
        "mt_bench/turn_2": (7 + 10) / 2,
        "mt_bench/writing": 8.0,
        "mt_bench/math": 4.0,
        "mt_bench/stem": 7.75,
        "mt_bench/num_judged": 5.0,
        "mt_bench/num_errors": 1.0,
    })


def rate_by_turn_and_length(request):
    """Turn-2 prompts (a whole conversation) get 8; turn-1 prompts get the answer's word count, capped to 1..10."""
    content = request["messages"][-1]["content"]
    if "### Assistant A:" in content:
        return "The follow-up is handled well. Rating: [[8]]"
    answer = re.search(r"\[The Start of Assistant's Answer\]\n(.*)\n\[The End of Assistant's Answer\]", content, re.DOTALL).group(1)
    return f"Rating: [[{min(10, max(1, len(answer.split())))}]]"


def test_judging_through_a_server_and_resuming(tmp_path):
    bench = MTBench()
    items = bench.load(limit=6)
    answers = {q.id: [" ".join(["word"] * (index + 2)), "second"] for index, q in enumerate(items)}
    cache_path = tmp_path / "mt_bench_judgments.jsonl"
    with StubChatServer(rate_by_turn_and_length) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="grader", api_key_env=None, max_concurrency=3, timeout_s=5)
        records = bench.judge(items[:4], answers, judge, cache_path)
        assert len(server.requests) == 8
        assert bench.judge(items[:4], answers, judge, cache_path) == records
        assert len(server.requests) == 8
        records = bench.judge(items, answers, judge, cache_path)
        assert len(server.requests) == 12
    expected = [(q.id, turn, float(i + 2) if turn == 1 else 8.0) for i, q in enumerate(items) for turn in (1, 2)]
    assert [(r.item_id, r.turn, r.verdict) for r in records] == expected
    assert all(r.raw.startswith(("Rating", "The follow-up")) for r in records)
    metrics = bench.aggregate(records)
    assert metrics["mt_bench/score"] == pytest.approx((2 + 3 + 4 + 5 + 6 + 7 + 6 * 8) / 12)
    assert metrics["mt_bench/writing"] == pytest.approx((2 + 3 + 4 + 5 + 6 + 7 + 6 * 8) / 12)


def test_missing_answers_are_named(questions):
    items = MTBench().load(limit=2)
    with pytest.raises(ValueError, match="82"):
        MTBench().judge(items, {"81": ["a", "b"], "82": ["only one"]}, judge=None, cache_path="unused.jsonl")
