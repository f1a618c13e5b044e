"""The contracts of evaluations and of LLM-judged benchmarks, and the records they share.

Every evaluation (a judged benchmark run by ``selalign.benchmarks.runner.GenerateAndJudge``, held-out preference
accuracy, ...) implements ``Evaluation``: ``evaluate(ctx) -> {"<name>/<metric>": float}``, given an ``EvalContext``
that both the evaluation entry point and the training entry point build.

A judged benchmark implements ``Benchmark``; the runner drives any of them the same way::

    items = bench.load(limit)                      # first ``limit`` items, all when None
    for item in items:                             # the context's generator answers every user turn, as a
        item.turns, item.temperature               # conversation, at the item's temperature (None: the runner's default)
    records = bench.judge(items, answers, judge, cache_path)   # answers: {item.id: [answer per turn]}
    write_records(path, records)
    metrics = bench.aggregate(records)             # {"<bench>/<metric>": float}

``judge`` only asks the judge for what the cache at ``cache_path`` does not hold yet, so rerunning after an
interruption (or with more items) pays only for the new judgments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import hydra

from selalign.generators.base import Generator, Policy
from selalign.generators.hf import HFGenerator
from selalign.judges.base import Judge, Messages, Verdict, VerdictParser
from selalign.judges.batch import JudgeRequest, judge_all
from selalign.judges.cache import JudgmentCache
from selalign.models import check_embedding_covers, freeze
from selalign.store import write_jsonl

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Answers = Mapping[str, Sequence[str]]


@dataclass
class EvalContext:
    """What an evaluation may use.

    ``policy`` is loaded and on its device (None when the evaluation reaches the policy only through a generator
    that serves its weights itself, e.g. ``vllm_server``); ``tokenizer`` is its tokenizer (None when nothing needs
    it). ``run_dir`` receives what the evaluation writes. ``model_cfg`` is the policy's model config
    (``name_or_path``, ``dtype``, ...): its identity keys the answer caches, so it must name the weights being
    evaluated (after training: the saved policy folder). ``ref_model_cfg`` is the reference's config and
    ``start_model_cfg`` the config of the model the policy started from (None when unknown). ``datamodule`` is a
    ``selalign.data.PreferenceDataModule`` after ``setup()``, or None when no preference data was configured.
    ``generator`` (the ``generator`` config group) generates the policy's answers: ``generator.generate(
    ctx.generation_policy(), conversations, Sampling(...), cache)``.
    """

    policy: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase | None
    run_dir: Path
    model_cfg: DictConfig
    ref_model_cfg: DictConfig | None = None
    start_model_cfg: DictConfig | None = None
    datamodule: Any | None = None
    seed: int = 0
    generator: Generator = field(default_factory=HFGenerator)

    def generation_policy(self) -> Policy:
        """The policy as generators take it: its weights' folder or hub id, identity, tokenizer and in-memory model."""
        return Policy.from_config(self.model_cfg, self.policy, self.tokenizer)


def load_start_model(ctx: EvalContext, evaluation: str) -> PreTrainedModel:
    """The model the policy started from (``ctx.start_model_cfg``), frozen and on the policy's device."""
    if ctx.start_model_cfg is None:
        raise ValueError(f"{evaluation} compares the policy with the model it started from; the run has no start_model config")
    start_model = freeze(hydra.utils.instantiate(ctx.start_model_cfg)).to(ctx.policy.device)
    check_embedding_covers(start_model, ctx.tokenizer, ctx.start_model_cfg.name_or_path, "starting")
    return start_model


class Evaluation(Protocol):
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Flat metrics named ``<evaluation>/<metric>``."""
        ...


class BenchmarkItem(Protocol):
    """One prompt of a benchmark: ``turns`` are the user messages, answered in order within one conversation."""

    id: str
    category: str
    turns: tuple[str, ...]
    temperature: float | None


class Benchmark(Protocol):
    name: str

    def load(self, limit: int | None = None) -> Sequence[BenchmarkItem]: ...

    def judge(self, items: Sequence[BenchmarkItem], answers: Answers, judge: Judge, cache_path: str | os.PathLike[str]) -> list[JudgmentRecord]: ...

    def aggregate(self, records: Sequence[JudgmentRecord]) -> dict[str, float]: ...


@dataclass(frozen=True)
class JudgmentRecord:
    """One judge call's outcome for one item.

    ``turn`` is set for MT-Bench (1 or 2); ``model_position`` ("A" or "B") and ``baseline`` for pairwise benchmarks.
    ``verdict`` is None exactly when ``error`` says why (no verdict in the judge's reply after all attempts).
    """

    benchmark: str
    item_id: str
    category: str
    verdict: Verdict | None
    raw: str
    error: str | None = None
    turn: int | None = None
    model_position: str | None = None
    baseline: str | None = None


def write_records(path: str | os.PathLike[str], records: Sequence[JudgmentRecord]) -> None:
    """Write records as JSON Lines, replacing ``path`` atomically."""
    write_jsonl(path, (asdict(record) for record in records))


def read_records(path: str | os.PathLike[str]) -> list[JudgmentRecord]:
    with open(path, encoding="utf-8") as file:
        return [JudgmentRecord(**json.loads(line)) for line in file if line.strip()]


def check_answers(items: Sequence[BenchmarkItem], answers: Answers) -> None:
    """Raise ValueError naming the items whose answers are missing or do not match their number of turns."""
    wrong = [item.id for item in items if len(answers.get(item.id, ())) != len(item.turns) or isinstance(answers.get(item.id), str)]
    if wrong:
        shown = ", ".join(wrong[:10]) + (f" and {len(wrong) - 10} more" if len(wrong) > 10 else "")
        raise ValueError(f"{len(wrong)} item(s) lack one answer per turn (answers map item id -> list of answers): {shown}")


class PairwiseItem(Protocol):
    """An item judged against a baseline's answer (Arena-Hard, AlpacaEval)."""

    id: str
    category: str
    baseline: str
    baseline_answer: str


def judge_against_baseline(
    benchmark: str,
    items: Sequence[PairwiseItem],
    answers: Answers,
    judge: Judge,
    cache_path: str | os.PathLike[str],
    messages: Callable[[PairwiseItem, str, str], Messages],
    parse: VerdictParser,
) -> list[JudgmentRecord]:
    """Two games per item, the baseline's answer as A then the model's as A (position bias cancels out), one record
    per game. ``messages(item, answer_a, answer_b)`` is the judge's prompt and ``parse`` reads its verdict."""
    check_answers(items, answers)
    games = []
    for item in items:
        model_answer = answers[item.id][0]
        games.append((item, "B", item.baseline_answer, model_answer))
        games.append((item, "A", model_answer, item.baseline_answer))
    positions = {"A": {"A": "model", "B": "baseline"}, "B": {"A": "baseline", "B": "model"}}
    requests = [JudgeRequest(messages(item, answer_a, answer_b), parse, positions[model_at]) for item, model_at, answer_a, answer_b in games]
    judgments = judge_all(judge, requests, JudgmentCache(cache_path))
    return [
        JudgmentRecord(benchmark, item.id, item.category, judgment.verdict, judgment.raw, judgment.error, model_position=model_at, baseline=item.baseline)
        for (item, model_at, _, _), judgment in zip(games, judgments, strict=True)
    ]


def limited(items: list, limit: int | None) -> list:
    """The first ``limit`` items (all when None)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    return items if limit is None else items[:limit]
