"""``benchmark=sentiment_gold``: sentiment of answers to held-out prompts, judged by the evaluation classifier.

``SentimentGold`` asks the trained policy and the model it started from the same held-out prompts (those of the
``eval_prompts`` movies, which no preference pair uses), with the same decoding settings and seed, and scores every
answer with ``SentimentClassifier`` (probability that the answer is positive), which is not the judge that labeled
the training pairs. Metrics:

- ``gold/win_rate``: share of prompts on which the trained answer's reward beats the starting answer's, ties
  counting half (a model against itself scores 0.5 under greedy decoding);
- ``gold/mean_reward``, ``gold/start_mean_reward``: mean classifier reward of the trained and the starting policy;
- ``gold/labeler_mean_reward``, ``gold/start_labeler_mean_reward``: the same under VADER, the labeling judge: a gain
  there without one under the classifier is a policy that learned the labeler, not sentiment;
- ``gold/distinct_2``, ``gold/start_distinct_2``: share of distinct word bigrams among all bigrams of the answers. Both
  judges reward any positive text, a review or not: a policy that answers every prompt with the same gushing
  sentence wins on reward, and this is where it shows (the answers are in the generations file to read).

Every answer pair is written to ``<run dir>/gold_generations.jsonl``. The starting model's answers are cached in
``<cache_dir>/sentiment/start_answers.jsonl`` (keyed by its identity, the prompt and the decoding settings), so runs
that start from the same model generate them once.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from statistics import fmean

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.benchmarks.base import EvalContext, load_start_model
from selalign.store import write_jsonl
from selalign.generators.hf import GenerationCache, generate
from selalign.store import model_identity
from selalign.settings.sentiment.classifier import SentimentClassifier
from selalign.settings.sentiment.corpus import review_prompts
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.world.benchmark import GENERATIONS_FILE, win_rate


def distinct_bigrams(texts: list[str]) -> float:
    """Share of distinct word bigrams (lower-cased, split on whitespace) among all bigrams of ``texts``; 0 when there are none."""
    bigrams = [(a, b) for text in texts for a, b in pairwise(text.lower().split())]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


class SentimentGold:
    """Classifier-judged sentiment of a policy against its starting model on ``n_prompts`` held-out prompts.

    Answers are at most ``max_new_tokens`` tokens, decoded greedily when ``temperature`` is 0 and sampled at
    ``temperature`` otherwise (seeded with the run's seed), ``batch_size`` prompts per ``generate`` call.
    ``classifier``: the evaluation judge (a ``SentimentClassifier``); ``cache_dir``: the shared cache folder, where the
    starting model's answers are kept.
    """

    name = "gold"

    def __init__(self, classifier: SentimentClassifier, cache_dir: str, n_prompts: int = 96, max_new_tokens: int = 32, temperature: float = 0.0, batch_size: int = 32):
        prompts = review_prompts("eval_prompts")
        if not 1 <= n_prompts <= len(prompts) or max_new_tokens < 1:
            raise ValueError(f"need 1 <= n_prompts <= {len(prompts)} and max_new_tokens >= 1, got {n_prompts} and {max_new_tokens}")
        self.classifier, self.labeler = classifier, VaderLabeler()
        self.conversations = [[{"role": "user", "content": prompt}] for prompt in prompts[:n_prompts]]
        self.start_cache_path = Path(cache_dir).expanduser() / "sentiment" / "start_answers.jsonl"
        self.max_new_tokens, self.temperature, self.batch_size = max_new_tokens, temperature, batch_size

    def answers(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int, cache: GenerationCache | None = None) -> list[str]:
        return generate(model, tokenizer, self.conversations, self.max_new_tokens, self.temperature, self.batch_size, seed, cache, progress=False)

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        trained = self.answers(ctx.policy, ctx.tokenizer, ctx.seed)
        start_model = load_start_model(ctx, "sentiment_gold")
        start = self.answers(start_model, ctx.tokenizer, ctx.seed, GenerationCache(self.start_cache_path, model_identity(ctx.start_model_cfg)))
        rewards, start_rewards = self.classifier.score(trained), self.classifier.score(start)
        labels, start_labels = self.labeler.score(trained), self.labeler.score(start)
        write_jsonl(ctx.run_dir / GENERATIONS_FILE, (
            {
                "prompt": conversation[0]["content"], "start_answer": start_answer, "start_reward": start_reward, "start_labeler_score": start_label,
                "answer": answer, "reward": reward, "labeler_score": label,
            }
            for conversation, start_answer, start_reward, start_label, answer, reward, label
            in zip(self.conversations, start, start_rewards, start_labels, trained, rewards, labels)
        ))
        return {
            "gold/win_rate": win_rate(rewards, start_rewards),
            "gold/mean_reward": fmean(rewards),
            "gold/start_mean_reward": fmean(start_rewards),
            "gold/labeler_mean_reward": fmean(labels),
            "gold/start_labeler_mean_reward": fmean(start_labels),
            "gold/distinct_2": distinct_bigrams(trained),
            "gold/start_distinct_2": distinct_bigrams(start),
        }
