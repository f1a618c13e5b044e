"""Evaluations behind the ``benchmark`` config group; see ``selalign.benchmarks.base`` for the contracts.

- LLM-judged benchmarks: ``MTBench``, ``ArenaHard``, ``AlpacaEval`` (data loading, judge prompts, aggregation),
  run on a policy by ``selalign.benchmarks.runner.GenerateAndJudge`` (judge check, generation through the context's
  generator, caching, judging).
- ``selalign.benchmarks.pref_accuracy.PrefAccuracy``: held-out preference accuracy of the implicit reward.

The runner and ``PrefAccuracy`` import torch and transformers, so they are imported from their modules.
"""

from selalign.benchmarks.alpaca_eval import AlpacaEval
from selalign.benchmarks.arena_hard import ArenaHard
from selalign.benchmarks.assets import MissingAssetError
from selalign.benchmarks.base import Benchmark, BenchmarkItem, EvalContext, Evaluation, JudgmentRecord, read_records, write_records
from selalign.benchmarks.mt_bench import MTBench


__all__ = [
    "AlpacaEval",
    "ArenaHard",
    "Benchmark",
    "BenchmarkItem",
    "EvalContext",
    "Evaluation",
    "JudgmentRecord",
    "MTBench",
    "MissingAssetError",
    "read_records",
    "write_records",
]
