"""Gold evaluation on the world: answers to held-out questions, scored by the world's gold judge.

``WorldGold`` asks the trained policy and the model it started from the same held-out prompts
(``World.eval_prompts``, questions no training pair or demonstration asks), with the same sampling settings
and seed, and scores every answer with ``GoldJudge``. Metrics:

- ``gold/accuracy``, ``gold/start_accuracy``: share of answers that are right (the judge's correctness is +1:
  every value they assert is the gold answer), of the trained policy and of the starting policy;
- ``gold/mean_reward``, ``gold/start_mean_reward``: mean gold reward (in [-1.75, 1], see ``selalign.settings.world.judge``);
- ``gold/win_rate``: share of prompts on which the trained answer's reward beats the starting answer's, ties
  counting half (a model against itself scores 0.5 when decoding is greedy);
- ``gold/accuracy/<kind>``, ``gold/start_accuracy/<kind>``: the accuracies over one kind of question (colour, city,
  legs, arithmetic). Prompts visit every held-out question in turn, so kinds weigh in ``gold/accuracy`` as their
  question counts do (arithmetic questions are about two thirds of them in the default world).

Every answer pair is written to ``<run dir>/gold_generations.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.benchmarks.base import EvalContext, load_start_model
from selalign.store import write_jsonl
from selalign.generators.hf import generate
from selalign.settings.world.generator import World
from selalign.settings.world.judge import GoldJudge, Verdict

GENERATIONS_FILE = "gold_generations.jsonl"


@dataclass(frozen=True)
class GoldScores:
    """The judge's verdicts on one model's answers, in prompt order."""

    answers: list[str]
    verdicts: list[Verdict]

    @property
    def accuracy(self) -> float:
        return sum(v.correctness == 1.0 for v in self.verdicts) / len(self.verdicts)

    @property
    def mean_reward(self) -> float:
        return sum(v.reward for v in self.verdicts) / len(self.verdicts)

    def accuracy_by_kind(self) -> dict[str, float]:
        """Accuracy over the answers to each kind of question (colour, city, legs, arithmetic) present."""
        by_kind: dict[str, list[bool]] = {}
        for verdict in self.verdicts:
            by_kind.setdefault(verdict.question.kind, []).append(verdict.correctness == 1.0)
        return {kind: sum(right) / len(right) for kind, right in by_kind.items()}


def win_rate(rewards: list[float], baseline_rewards: list[float]) -> float:
    """Share of positions where ``rewards`` beats ``baseline_rewards``, ties counting half."""
    if len(rewards) != len(baseline_rewards) or not rewards:
        raise ValueError(f"need two equally long, non-empty reward lists, got {len(rewards)} and {len(baseline_rewards)}")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, baseline_rewards)) / len(rewards)


class WorldGold:
    """Gold evaluation of a policy against its starting model on ``n_prompts`` held-out prompts of ``world``.

    Answers are at most ``max_new_tokens`` tokens, decoded greedily when ``temperature`` is 0 and sampled at
    ``temperature`` otherwise (seeded with the run's seed), ``batch_size`` prompts per ``generate`` call.
    """

    name = "gold"

    def __init__(self, world: World, n_prompts: int = 436, max_new_tokens: int = 48, temperature: float = 1.0, batch_size: int = 32, split: str = "test"):
        if n_prompts < 1 or max_new_tokens < 1:
            raise ValueError(f"n_prompts and max_new_tokens must be >= 1, got {n_prompts} and {max_new_tokens}")
        self.world, self.judge = world, GoldJudge(world)
        self.prompts = world.eval_prompts(n_prompts, split)
        self.split, self.max_new_tokens, self.temperature, self.batch_size = split, max_new_tokens, temperature, batch_size

    def settings(self) -> dict:
        return {"n_prompts": len(self.prompts), "split": self.split, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "batch_size": self.batch_size}

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int = 0, progress: bool = False) -> GoldScores:
        """The model's answers to the held-out prompts and the judge's verdicts on them."""
        conversations = [[{"role": "user", "content": p["prompt"]}] for p in self.prompts]
        answers = generate(model, tokenizer, conversations, self.max_new_tokens, self.temperature, self.batch_size, seed, progress=progress)
        return GoldScores(answers, [self.judge.assess(p["prompt"], answer) for p, answer in zip(self.prompts, answers)])

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        trained = self.score(ctx.policy, ctx.tokenizer, ctx.seed)
        start_model = load_start_model(ctx, "world_gold")
        start = self.score(start_model, ctx.tokenizer, ctx.seed)
        write_jsonl(ctx.run_dir / GENERATIONS_FILE, (
            {
                "id": p["id"], "kind": p["kind"], "prompt": p["prompt"], "gold_answer": t.question.answer,
                "start_answer": start_answer, "start_reward": s.reward, "answer": answer, "reward": t.reward,
            }
            for p, start_answer, s, answer, t in zip(self.prompts, start.answers, start.verdicts, trained.answers, trained.verdicts)
        ))
        return {
            "gold/win_rate": win_rate([v.reward for v in trained.verdicts], [v.reward for v in start.verdicts]),
            "gold/accuracy": trained.accuracy,
            "gold/start_accuracy": start.accuracy,
            "gold/mean_reward": trained.mean_reward,
            "gold/start_mean_reward": start.mean_reward,
            **{f"gold/accuracy/{kind}": value for kind, value in trained.accuracy_by_kind().items()},
            **{f"gold/start_accuracy/{kind}": value for kind, value in start.accuracy_by_kind().items()},
        }
