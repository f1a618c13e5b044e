"""The shared gold evaluation: K answers per held-out prompt from the trained and the starting policy, scored by the
setting's gold scorer, with win rate, expected breakdown, KL to the start and diversity."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from selalign.benchmarks.base import EvalContext
from selalign.benchmarks.gold import GENERATIONS_FILE, SCORES_FILE, GoldEvaluation, distinct_n, top_opening_share, win_rate
from selalign.logprobs import response_logprobs
from selalign.models import load_causal_lm, load_tokenizer
from selalign.settings.base import GoldScorer, GoldScores, Setting
from support.tiny import build_model


def model_cfg(path):
    return OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(path), "dtype": "float32", "trust_remote_code": False, "revision": None})


def context(path, run_dir, start=None, seed=0):
    return EvalContext(load_causal_lm(str(path)), load_tokenizer(str(path)), run_dir, model_cfg(path), None, model_cfg(start or path), None, seed)


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]) == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_diversity_metrics_by_hand():
    texts = ["I loved it so much", "I loved it too", "A dull film"]
    assert distinct_n(texts, 1) == pytest.approx(9 / 12)  # i, loved, it, so, much, too, a, dull, film of 12 words
    assert distinct_n(texts, 2) == pytest.approx(7 / 9)  # "i loved" and "loved it" repeat among 9 bigrams
    assert top_opening_share(texts, 3) == pytest.approx(2 / 3)
    assert distinct_n([], 2) == 0.0 and top_opening_share([], 3) == 0.0


def test_a_policy_against_itself_wins_half_and_writes_its_answers(tiny_ladder, tiny_world_setting, world, tmp_path):
    path = tiny_ladder / "world_small"
    evaluation = GoldEvaluation(tiny_world_setting, n_prompts=6, max_new_tokens=10, temperature=0.0, batch_size=4)
    metrics = evaluation.evaluate(context(path, tmp_path))
    assert metrics["gold/win_rate"] == 0.5 and metrics["gold/kl_to_start"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["gold/accuracy"] == metrics["gold/start_accuracy"] and 0.0 <= metrics["gold/accuracy"] <= 1.0
    assert metrics["gold/accuracy"] + metrics["gold/wrong"] + metrics["gold/no_value"] == pytest.approx(1.0)
    assert metrics["gold/mean_reward"] == metrics["gold/start_mean_reward"] and -1.75 <= metrics["gold/mean_reward"] <= 1.0
    kinds = ("colour", "city", "legs", "arithmetic")
    assert {name for name in metrics if name.startswith("gold/accuracy/")} == {f"gold/accuracy/{kind}{se}" for kind in kinds for se in ("", "_se")}
    assert metrics["gold/probe/accuracy"] == metrics["gold/start_probe/accuracy"]
    rows = [json.loads(line) for line in (tmp_path / GENERATIONS_FILE).read_text().splitlines()]
    assert [row["prompt"] for row in rows] == [p["prompt"] for p in world.eval_prompts(6)]
    assert all(row["answer"] == row["start_answer"] and row["reward"] == row["start_reward"] for row in rows)
    scores = [json.loads(line) for line in (tmp_path / SCORES_FILE).read_text().splitlines()]
    assert [row["id"] for row in scores] == [p["id"] for p in world.eval_prompts(6)] and all(row["win"] == 0.5 for row in scores)


def test_k_samples_per_prompt_are_averaged_per_prompt(tiny_ladder, tiny_world_setting, tmp_path):
    evaluation = GoldEvaluation(tiny_world_setting, n_prompts=3, max_new_tokens=8, temperature=1.0, samples_per_prompt=4, kl_to_start=False, probe=False)
    metrics = evaluation.evaluate(context(tiny_ladder / "world_small", tmp_path, start=tiny_ladder / "world_large_dpo"))
    rows = [json.loads(line) for line in (tmp_path / GENERATIONS_FILE).read_text().splitlines()]
    assert len(rows) == 12 and [row["sample"] for row in rows[:4]] == [0, 1, 2, 3]
    scores = [json.loads(line) for line in (tmp_path / SCORES_FILE).read_text().splitlines()]
    for i, score in enumerate(scores):
        assert score["reward"] == pytest.approx(sum(row["reward"] for row in rows[4 * i : 4 * i + 4]) / 4)
    assert metrics["gold/mean_reward"] == pytest.approx(sum(s["reward"] for s in scores) / 3)
    assert metrics["gold/mean_reward_se"] >= 0.0


def test_greedy_decoding_takes_one_sample_and_the_start_model_is_required(tiny_ladder, tiny_world_setting, tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt=1"):
        GoldEvaluation(tiny_world_setting, n_prompts=2, max_new_tokens=4, temperature=0.0, samples_per_prompt=3)
    path = tiny_ladder / "world_small"
    ctx = EvalContext(load_causal_lm(str(path)), load_tokenizer(str(path)), tmp_path, model_cfg(path))
    with pytest.raises(ValueError, match="start_model"):
        GoldEvaluation(tiny_world_setting, n_prompts=2, max_new_tokens=4).evaluate(ctx)


class OnePrompt(Setting):
    """A setting with one held-out prompt and a scorer that pays nothing: for the KL estimator."""

    name = "one_prompt"

    def artifacts(self):
        return {}

    def eval_prompts(self, n, split="test"):
        return [{"id": "only", "prompt": "a b"}]

    def scorer(self):
        class Zero(GoldScorer):
            def score(self, prompts, responses):
                return GoldScores([0.0] * len(responses))

        return Zero()


def word_model(out, seed):
    """A tiny random LM over the words User, :, Assistant, a, b and an end token (also its pad): every answer it can
    sample decodes and re-encodes to the same tokens, so sequence log-probs are exact."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<eos>", "User", ":", "Assistant", "a", "b"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
    tokenizer.save_pretrained(out)
    model = build_model(out, tokenizer, hidden=16, layers=1, seed=seed)
    with torch.no_grad():  # sharper next-token distributions than a fresh init's near-uniform ones
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(out)
    return out


def test_the_kl_estimate_matches_the_exact_kl_over_every_sequence(tmp_path):
    policy_dir, start_dir = word_model(tmp_path / "policy", seed=0), word_model(tmp_path / "start", seed=1)
    policy, start, tokenizer = load_causal_lm(str(policy_dir)), load_causal_lm(str(start_dir)), load_tokenizer(str(policy_dir))
    # Every answer of at most 2 new tokens: the empty one (end first), one word then the end, or two words (truncated).
    words = ["User", ":", "Assistant", "a", "b"]
    answers = [""] + words + [f"{x} {y}" for x in words for y in words]
    prompts = ["a b"] * len(answers)
    policy_logps = torch.tensor(response_logprobs(policy, tokenizer, prompts, answers, max_new_tokens=2))
    start_logps = torch.tensor(response_logprobs(start, tokenizer, prompts, answers, max_new_tokens=2))
    assert policy_logps.exp().sum().item() == pytest.approx(1.0, abs=1e-5)  # the answers are the whole sample space
    assert start_logps.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    exact = (policy_logps.exp() * (policy_logps - start_logps)).sum().item()
    samples = 100
    evaluation = GoldEvaluation(OnePrompt(str(tmp_path / "cache")), n_prompts=1, max_new_tokens=2, temperature=1.0, samples_per_prompt=samples, probe=False)
    ctx = EvalContext(policy, tokenizer, tmp_path, model_cfg(policy_dir), None, model_cfg(start_dir), None, 0)
    metrics = evaluation.evaluate(ctx)
    variance = (policy_logps.exp() * (policy_logps - start_logps - exact) ** 2).sum().item()
    assert exact > 0.5 and abs(metrics["gold/kl_to_start"] - exact) < 4 * math.sqrt(variance / samples)
