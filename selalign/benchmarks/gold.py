"""``benchmark=gold``: the trained policy and its starting model answer the setting's held-out prompts; the setting's
gold scorer scores both. One evaluation for every setting.

Each of ``n_prompts`` held-out prompts (``Setting.eval_prompts``) is answered ``samples_per_prompt`` (K) times by
each model, sample j of both models with the same seed, at ``temperature`` (0: greedy, then K must be 1). The
setting's ``GoldScorer`` scores every answer. Per prompt, every value is the mean over its K samples (the expected
value under the model's sampling), so one run's noise shrinks with K; the metrics are means over prompts:

- ``gold/mean_reward``, ``gold/start_mean_reward``: expected gold reward of the trained and of the starting policy;
- ``gold/<b>``, ``gold/start_<b>`` for each breakdown value ``b`` of the scorer (the world: ``accuracy``, ``wrong``,
  ``no_value``, ``accuracy/<kind>``, ...), over the prompts it applies to;
- ``gold/win_rate``: share of sample pairs (trained sample j against start sample j) where the trained answer's
  reward is higher, ties counting half; a model against itself scores 0.5 exactly;
- ``gold/mean_reward_se``, ``gold/win_rate_se``: their standard errors over prompts (the run's own noise);
- ``gold/kl_to_start``: a Monte-Carlo estimate of KL(pi_theta || pi_start) per prompt, the mean over the trained
  samples y of sum_t log pi_theta(y_t | x, y_<t) - log pi_start(y_t | x, y_<t); each answer is scored in the
  tokenization training would give it (``selalign.data.formats``), with the end-of-sequence token unless the answer
  used all ``max_new_tokens``;
- ``gold/distinct_1``, ``gold/distinct_2``, ``gold/top_opening_share`` (and ``start_`` versions): distinct word
  unigrams and bigrams over all answers, and the share of answers opening with the most common first
  ``opening_words`` words (a policy collapsing to one stock answer shows here, whatever its reward);
- ``gold/probe/*``, ``gold/start_probe/*``: the setting's deterministic knowledge probe, where it has one.

Writes ``gold_generations.jsonl`` (every answer of both models with its reward) and ``gold_scores.jsonl`` (one row per
prompt: its per-prompt values, which ``selalign.report`` pairs across runs by prompt id) into the run dir. The
starting model's answers are cached in the setting's cache (``generations/gold_start.jsonl``), so runs that start
from the same model generate them once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.benchmarks.base import EvalContext, load_start_model
from selalign.generation import GenerationCache, generate
from selalign.logprobs import response_logprobs
from selalign.settings.base import Setting
from selalign.store import model_identity, write_jsonl

GENERATIONS_FILE = "gold_generations.jsonl"
SCORES_FILE = "gold_scores.jsonl"


def win_rate(rewards: Sequence[float], baseline_rewards: Sequence[float]) -> float:
    """Share of positions where ``rewards`` beats ``baseline_rewards``, ties counting half."""
    if len(rewards) != len(baseline_rewards) or not rewards:
        raise ValueError(f"need two equally long, non-empty reward lists, got {len(rewards)} and {len(baseline_rewards)}")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, baseline_rewards)) / len(rewards)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Share of distinct word n-grams (lower-cased, split on whitespace) among all n-grams of ``texts``; 0 when none."""
    grams = [tuple(words[i : i + n]) for text in texts for words in [text.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def top_opening_share(texts: Sequence[str], words: int = 3) -> float:
    """Share of ``texts`` that open with the most common first ``words`` words (lower-cased); 0 for no texts."""
    openings = Counter(" ".join(text.lower().split()[:words]) for text in texts)
    return max(openings.values()) / len(texts) if texts else 0.0


def standard_error(values: Sequence[float]) -> float:
    """The standard error of the mean of ``values`` (0 for fewer than two)."""
    if len(values) < 2:
        return 0.0
    mean = fmean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


class GoldEvaluation:
    """The setting's gold evaluation of a policy against its starting model (see the module docstring).

    Args:
        setting: the run's ``Setting`` (``${setting}``): its held-out prompts, gold scorer and probe.
        n_prompts: held-out prompts answered. samples_per_prompt: K answers per prompt and model.
        max_new_tokens: longest answer. temperature: 0 decodes greedily (K must be 1), > 0 samples.
        batch_size: prompts per ``generate`` call. split: the setting's held-out split.
        kl_to_start: estimate ``gold/kl_to_start`` (one more forward of both models over the trained answers).
        probe: run the setting's knowledge probe, where it has one.
        opening_words: words that make an answer's opening, for ``top_opening_share``.
    """

    name = "gold"

    def __init__(self, setting: Setting, n_prompts: int, max_new_tokens: int, temperature: float = 1.0, samples_per_prompt: int = 1,
                 batch_size: int = 32, split: str = "test", kl_to_start: bool = True, probe: bool = True, opening_words: int = 3):
        if n_prompts < 1 or max_new_tokens < 1 or samples_per_prompt < 1:
            raise ValueError(f"benchmark.n_prompts, max_new_tokens and samples_per_prompt must be >= 1, got {n_prompts}, {max_new_tokens} and {samples_per_prompt}")
        if temperature < 0:
            raise ValueError(f"benchmark.temperature must be >= 0, got {temperature}")
        if temperature == 0 and samples_per_prompt > 1:
            raise ValueError(f"benchmark.temperature=0 decodes greedily: every sample is the same answer; set benchmark.samples_per_prompt=1 (got {samples_per_prompt})")
        self.setting, self.prompts = setting, setting.eval_prompts(n_prompts, split)
        self.max_new_tokens, self.temperature, self.samples = max_new_tokens, temperature, samples_per_prompt
        self.batch_size, self.kl_to_start, self.probe, self.opening_words = batch_size, kl_to_start, probe, opening_words
        self._scorer = None

    @property
    def scorer(self):
        if self._scorer is None:  # built on first use: a setting's scorer may load models
            self._scorer = self.setting.scorer()
        return self._scorer

    def answers(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int, cache: GenerationCache | None = None) -> list[list[str]]:
        """[prompt][sample] answers; sample j is drawn with seed ``seed * 1000 + j``."""
        conversations = [[{"role": "user", "content": p["prompt"]}] for p in self.prompts]
        samples = [generate(model, tokenizer, conversations, self.max_new_tokens, self.temperature, self.batch_size, seed * 1000 + j, cache, progress=False)
                   for j in range(self.samples)]
        return [[samples[j][i] for j in range(self.samples)] for i in range(len(self.prompts))]

    def per_prompt(self, answers: list[list[str]]) -> tuple[list[list[float]], dict[str, list[float | None]]]:
        """(rewards [prompt][sample], breakdown name -> per-prompt mean over samples, None where it does not apply)."""
        flat_prompts = [p["prompt"] for p, samples in zip(self.prompts, answers) for _ in samples]
        scores = self.scorer.score(flat_prompts, [a for samples in answers for a in samples])
        k = self.samples
        rewards = [scores.rewards[i * k : (i + 1) * k] for i in range(len(self.prompts))]
        breakdown = {}
        for name, values in scores.breakdown.items():
            per_prompt = [[v for v in values[i * k : (i + 1) * k] if v is not None] for i in range(len(self.prompts))]
            breakdown[name] = [fmean(v) if v else None for v in per_prompt]
        return rewards, breakdown

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        trained_answers = self.answers(ctx.policy, ctx.tokenizer, ctx.seed)
        start_model = load_start_model(ctx, "benchmark=gold")
        start_cache = GenerationCache(self.setting.cache_dir / "generations" / "gold_start.jsonl", model_identity(ctx.start_model_cfg))
        start_answers = self.answers(start_model, ctx.tokenizer, ctx.seed, start_cache)
        rewards, breakdown = self.per_prompt(trained_answers)
        start_rewards, start_breakdown = self.per_prompt(start_answers)
        wins = [win_rate(t, s) for t, s in zip(rewards, start_rewards)]
        mean_rewards, start_means = [fmean(r) for r in rewards], [fmean(r) for r in start_rewards]
        rows = []
        for i, prompt in enumerate(self.prompts):
            row = {**prompt, "reward": mean_rewards[i], "start_reward": start_means[i], "win": wins[i]}
            row |= {name: values[i] for name, values in breakdown.items()} | {f"start_{name}": values[i] for name, values in start_breakdown.items()}
            rows.append(row)
        metrics = {
            "gold/win_rate": fmean(wins), "gold/win_rate_se": standard_error(wins),
            "gold/mean_reward": fmean(mean_rewards), "gold/mean_reward_se": standard_error(mean_rewards), "gold/start_mean_reward": fmean(start_means),
        }
        for prefix, values in (("", breakdown), ("start_", start_breakdown)):
            for name, per_prompt in values.items():
                applicable = [v for v in per_prompt if v is not None]
                if applicable:
                    metrics[f"gold/{prefix}{name}"] = fmean(applicable)
        if self.kl_to_start:
            kl = self.kl_estimates(ctx.policy, start_model, ctx.tokenizer, trained_answers)
            metrics["gold/kl_to_start"] = fmean(kl)
            for row, value in zip(rows, kl):
                row["kl_to_start"] = value
        for prefix, answers in (("", trained_answers), ("start_", start_answers)):
            texts = [a for samples in answers for a in samples]
            metrics |= {f"gold/{prefix}distinct_1": distinct_n(texts, 1), f"gold/{prefix}distinct_2": distinct_n(texts, 2),
                        f"gold/{prefix}top_opening_share": top_opening_share(texts, self.opening_words)}
        if self.probe:
            for prefix, model in (("", ctx.policy), ("start_", start_model)):
                metrics |= {f"gold/{prefix}probe/{name}": value for name, value in self.setting.probe(model, ctx.tokenizer).items()}
        write_jsonl(ctx.run_dir / SCORES_FILE, rows)
        write_jsonl(ctx.run_dir / GENERATIONS_FILE, (
            {"id": p["id"], "prompt": p["prompt"], "sample": j, "answer": answer, "reward": reward, "start_answer": start_answer, "start_reward": start_reward}
            for p, answers, start_samples, prompt_rewards, prompt_start_rewards in zip(self.prompts, trained_answers, start_answers, rewards, start_rewards)
            for j, (answer, start_answer, reward, start_reward) in enumerate(zip(answers, start_samples, prompt_rewards, prompt_start_rewards))
        ))
        return metrics

    def kl_estimates(self, policy: PreTrainedModel, start_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, answers: list[list[str]]) -> list[float]:
        """Per prompt, the mean over its trained samples of log pi_theta(y | x) - log pi_start(y | x)."""
        prompts = [p["prompt"] for p, samples in zip(self.prompts, answers) for _ in samples]
        flat = [a for samples in answers for a in samples]
        was_training = policy.training
        policy.eval()
        try:
            trained = response_logprobs(policy, tokenizer, prompts, flat, self.max_new_tokens, self.batch_size)
        finally:
            policy.train(was_training)
        start = response_logprobs(start_model, tokenizer, prompts, flat, self.max_new_tokens, self.batch_size)
        k = self.samples
        return [fmean(t - s for t, s in zip(trained[i * k : (i + 1) * k], start[i * k : (i + 1) * k])) for i in range(len(self.prompts))]

