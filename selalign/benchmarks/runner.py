"""Any judged benchmark as an ``Evaluation``: generate the policy's answers, judge them, aggregate the verdicts."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from selalign.benchmarks.base import Benchmark, BenchmarkItem, EvalContext, write_records
from selalign.generation import GenerationCache, answer_turns
from selalign.judges.base import Judge
from selalign.store import model_identity, write_jsonl

log = logging.getLogger(__name__)


class GenerateAndJudge:
    """Runs ``benchmark`` on the policy with ``judge``.

    Answers every user turn of the first ``limit`` items (all when None) within one conversation, at most
    ``max_new_tokens`` tokens each, at the item's temperature (``default_temperature`` when it has none), items of
    one temperature batched together (``batch_size`` prompts per ``generate`` call). Writes into ``ctx.run_dir``:

    - ``<name>_generations.jsonl``: one row per item (id, category, temperature, turns, answers);
    - ``<name>_judgments.jsonl``: one ``JudgmentRecord`` per judge call, with the judge's raw reply.

    The generation cache ``<name>_generation_cache.jsonl`` and the judgment cache ``<name>_judgment_cache.jsonl``
    live in ``cache_dir`` (default: the run dir): a rerun with the same folder generates and judges only what
    they lack. Returns the benchmark's aggregate metrics.
    """

    def __init__(
        self,
        benchmark: Benchmark,
        judge: Judge,
        limit: int | None = None,
        max_new_tokens: int = 1024,
        batch_size: int = 8,
        default_temperature: float = 0.0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.benchmark = benchmark
        self.judge = judge
        self.limit = limit
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.default_temperature = default_temperature
        self.cache_dir = cache_dir

    def temperature(self, item: BenchmarkItem) -> float:
        return self.default_temperature if item.temperature is None else item.temperature

    def answers(self, items: Sequence[BenchmarkItem], ctx: EvalContext, cache: GenerationCache) -> dict[str, list[str]]:
        """{item id: one answer per turn}."""
        by_temperature: dict[float, list[BenchmarkItem]] = {}
        for item in items:
            by_temperature.setdefault(self.temperature(item), []).append(item)
        answers = {}
        for temperature, group in sorted(by_temperature.items()):
            replies = answer_turns(ctx.policy, ctx.tokenizer, [item.turns for item in group], self.max_new_tokens, temperature, self.batch_size, ctx.seed, cache)
            answers.update({item.id: reply for item, reply in zip(group, replies, strict=True)})
        return answers

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        name = self.benchmark.name
        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else ctx.run_dir
        items = self.benchmark.load(self.limit)
        cache = GenerationCache(cache_dir / f"{name}_generation_cache.jsonl", model_identity(ctx.model_cfg))
        answers = self.answers(items, ctx, cache)
        generations = ctx.run_dir / f"{name}_generations.jsonl"
        write_jsonl(generations, (
            {"id": item.id, "category": item.category, "temperature": self.temperature(item), "turns": list(item.turns), "answers": answers[item.id]}
            for item in items
        ))
        records = self.benchmark.judge(items, answers, self.judge, cache_dir / f"{name}_judgment_cache.jsonl")
        judgments = ctx.run_dir / f"{name}_judgments.jsonl"
        write_records(judgments, records)
        log.info("%s: %d items; answers in %s, judgments in %s", name, len(items), generations, judgments)
        return self.benchmark.aggregate(records)
