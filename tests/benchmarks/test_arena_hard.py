"""Arena-Hard: position swapping through a real local HTTP server, battle scoring and bootstrap by hand."""

from __future__ import annotations

import math

import pytest

from selalign.benchmarks import ArenaHard, JudgmentRecord
from selalign.benchmarks.arena_hard import CREATIVE_WRITING_SYSTEM_PROMPT, SYSTEM_PROMPT, battle_scores, bootstrap_interval
from selalign.judges import OpenAIJudge
from support.stub_server import StubChatServer

MODEL_MARK = "<model answer>"


@pytest.fixture(scope="module")
def prompts():
    loaded = ArenaHard().load()
    hard = [p for p in loaded if p.category == "hard_prompt"][:6]
    creative = [p for p in loaded if p.category == "creative_writing"][:4]
    return hard + creative


def answers_for(prompts):
    return {p.id: [f"{MODEL_MARK} for {p.id}"] for p in prompts}


def run(prompts, reply, tmp_path, **bench_settings):
    bench = ArenaHard(**bench_settings)
    with StubChatServer(reply) as server:
        judge = OpenAIJudge(base_url=server.base_url, model="arena-judge", api_key_env=None, max_concurrency=4, timeout_s=5)
        records = bench.judge(prompts, answers_for(prompts), judge, tmp_path / "arena_hard_judgments.jsonl")
    return server, records, bench.aggregate(records)


def prefers_model(request):
    content = request["messages"][-1]["content"]
    model_first = content.index(MODEL_MARK) < content.index("<|The Start of Assistant B's Answer|>")
    return "My final verdict is: [[A>>B]]" if model_first else "My final verdict is: [[B>>A]]"


def test_judge_prompt_has_both_answers_in_order(prompts):
    hard, creative = prompts[0], prompts[-1]
    system, user = ArenaHard().judge_messages(hard, "first", "second")
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["content"] == (
        f"<|User Prompt|>\n{hard.prompt}\n\n<|The Start of Assistant A's Answer|>\nfirst\n<|The End of Assistant A's Answer|>\n\n"
        "<|The Start of Assistant B's Answer|>\nsecond\n<|The End of Assistant B's Answer|>"
    )
    assert ArenaHard().judge_messages(creative, "a", "b")[0]["content"] == CREATIVE_WRITING_SYSTEM_PROMPT
    assert "generating your own answer" in SYSTEM_PROMPT and "generating your own answer" not in CREATIVE_WRITING_SYSTEM_PROMPT


@pytest.mark.parametrize("label", ["[[A>B]]", "[[A>>B]]", "[[B>A]]", "[[B>>A]]", "[[A=B]]"])
def test_a_judge_with_a_fixed_position_preference_gives_50_percent(prompts, tmp_path, label):
    server, records, metrics = run(prompts, lambda request: f"My final verdict is: {label}", tmp_path)
    assert len(server.requests) == 2 * len(prompts)
    assert [r.model_position for r in records] == ["B", "A"] * len(prompts)
    assert metrics["arena_hard/win_rate"] == pytest.approx(50.0)
    assert metrics["arena_hard/ci_low"] <= 50.0 <= metrics["arena_hard/ci_high"]
    assert metrics["arena_hard/num_prompts"] == len(prompts)


def test_a_judge_that_prefers_the_model_gives_100_percent(prompts, tmp_path):
    server, records, metrics = run(prompts, prefers_model, tmp_path)
    assert {r.verdict for r in records if r.model_position == "A"} == {"A>>B"}
    assert {r.verdict for r in records if r.model_position == "B"} == {"B>>A"}
    assert (metrics["arena_hard/win_rate"], metrics["arena_hard/ci_low"], metrics["arena_hard/ci_high"]) == (100.0, 100.0, 100.0)
    assert metrics["arena_hard/hard_prompt/win_rate"] == metrics["arena_hard/creative_writing/win_rate"] == 100.0
    assert {r.baseline for r in records} == {"o3-mini-2025-01-31", "gemini-2.0-flash-001"}


def test_unreadable_verdicts_are_errors_and_leave_the_prompt_out(prompts, tmp_path):
    def unsure_about_first_prompt(request):
        if prompts[0].prompt in request["messages"][-1]["content"]:
            return "Both have merits."
        return prefers_model(request)

    server, records, metrics = run(prompts, unsure_about_first_prompt, tmp_path)
    errors = [r for r in records if r.error]
    assert len(errors) == 2 and {r.item_id for r in errors} == {prompts[0].id} and all(r.raw == "Both have merits." for r in errors)
    assert len(server.requests) == 2 * len(prompts) + 2 * 2  # two unreadable games, each asked three times
    assert metrics["arena_hard/num_incomplete"] == 1 and metrics["arena_hard/num_errors"] == 2
    assert metrics["arena_hard/num_prompts"] == len(prompts) - 1 and metrics["arena_hard/win_rate"] == 100.0


def test_battle_scores():
    assert battle_scores("A>>B", "A") == [1.0, 1.0, 1.0]
    assert battle_scores("A>>B", "B") == [0.0, 0.0, 0.0]
    assert battle_scores("A>B", "A") == [1.0]
    assert battle_scores("B>A", "B") == [1.0]
    assert battle_scores("A=B", "B") == [0.5]
    assert battle_scores("B>>A", "B", strong_verdict_weight=1) == [1.0]


def game(item_id, position, verdict, category="hard_prompt"):
    return JudgmentRecord("arena_hard", item_id, category, verdict, f"[[{verdict}]]", None if verdict else "no verdict", model_position=position)


def test_win_rate_by_hand():
    records = [
        game("p1", "B", "A>>B"), game("p1", "A", "A>B"),  # baseline strongly, then model slightly: 0, 0, 0, 1
        game("p2", "B", "A=B"), game("p2", "A", "B>>A"),  # tie, then baseline strongly: 0.5, 0, 0, 0
        game("p3", "B", None), game("p3", "A", "A>>B"),  # no verdict in one game: prompt left out
    ]
    metrics = ArenaHard(bootstrap_rounds=50).aggregate(records)
    assert metrics["arena_hard/win_rate"] == pytest.approx(100 * 1.5 / 8)
    assert (metrics["arena_hard/num_prompts"], metrics["arena_hard/num_incomplete"], metrics["arena_hard/num_errors"]) == (2, 1, 1)
    assert 0.0 <= metrics["arena_hard/ci_low"] <= metrics["arena_hard/win_rate"] <= metrics["arena_hard/ci_high"] <= 100.0


def test_bootstrap_matches_the_normal_approximation():
    battles = [1.0] * 500 + [0.0] * 500
    low, high = bootstrap_interval(battles, rounds=2000, seed=0)
    half_width = 1.96 * math.sqrt(0.25 / 1000)  # 0.031
    assert low == pytest.approx(0.5 - half_width, abs=0.005)
    assert high == pytest.approx(0.5 + half_width, abs=0.005)


def test_bootstrap_is_seeded():
    battles = [1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0]
    assert bootstrap_interval(battles, 100, seed=3) == bootstrap_interval(battles, 100, seed=3)
    assert bootstrap_interval(battles, 100, seed=3) != bootstrap_interval(battles, 100, seed=4)
    assert bootstrap_interval([1.0] * 9, 100, seed=0) == (1.0, 1.0)
