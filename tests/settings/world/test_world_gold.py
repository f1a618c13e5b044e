"""The world's gold evaluation: held-out answers of the trained and the starting policy, scored by the gold judge."""

import json

import pytest
from omegaconf import OmegaConf

from selalign.benchmarks.base import EvalContext
from selalign.models import load_causal_lm, load_tokenizer
from selalign.settings.world import WorldGold
from selalign.settings.world.benchmark import GENERATIONS_FILE, GoldScores, win_rate


def model_cfg(path):
    return OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(path), "dtype": "float32", "trust_remote_code": False, "revision": None})


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]) == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_scores_follow_the_judge(world, judge):
    prompt = world.eval_prompts(1)[0]["prompt"]
    answer = judge.question(prompt).answer
    verdicts = [judge.assess(prompt, f"It is {answer}."), judge.assess(prompt, "I do not know.")]
    scores = GoldScores(["", ""], verdicts)
    assert scores.accuracy == 0.5 and scores.accuracy_by_kind() == {verdicts[0].question.kind: 0.5}
    assert scores.mean_reward == pytest.approx((1.0 + 0.0) / 2)


def test_a_policy_against_itself_greedy_wins_half_and_writes_its_answers(tiny_ladder, world, tmp_path):
    path = tiny_ladder / "world_small"
    ctx = EvalContext(load_causal_lm(str(path)), load_tokenizer(str(path)), tmp_path, model_cfg(path), None, model_cfg(path), None, 0)
    metrics = WorldGold(world, n_prompts=6, max_new_tokens=10, temperature=0.0, batch_size=4).evaluate(ctx)
    assert metrics["gold/win_rate"] == 0.5
    assert metrics["gold/accuracy"] == metrics["gold/start_accuracy"] and 0.0 <= metrics["gold/accuracy"] <= 1.0
    assert metrics["gold/mean_reward"] == metrics["gold/start_mean_reward"] and -1.75 <= metrics["gold/mean_reward"] <= 1.0
    assert {name for name in metrics if name.startswith("gold/accuracy/")} == {f"gold/accuracy/{kind}" for kind in ("colour", "city", "legs", "arithmetic")}
    rows = [json.loads(line) for line in (tmp_path / GENERATIONS_FILE).read_text().splitlines()]
    assert [row["prompt"] for row in rows] == [p["prompt"] for p in world.eval_prompts(6)]
    assert all(row["answer"] == row["start_answer"] and row["reward"] == row["start_reward"] for row in rows)


def test_the_starting_model_is_required(tiny_ladder, world, tmp_path):
    path = tiny_ladder / "world_small"
    ctx = EvalContext(load_causal_lm(str(path)), load_tokenizer(str(path)), tmp_path, model_cfg(path))
    with pytest.raises(ValueError, match="start_model"):
        WorldGold(world, n_prompts=2).evaluate(ctx)
