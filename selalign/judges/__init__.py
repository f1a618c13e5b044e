"""LLM judges for the benchmark harness: one class per transport, one job each.

- ``OpenAIJudge`` (``selalign.judges.openai``): any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, TGI, ...),
  on the official ``openai`` client.
- ``LocalHFJudge`` (``selalign.judges.local_hf``, imports torch/transformers): a local causal LM, offline.
- ``judge_all`` + ``JudgmentCache``: bounded-concurrency judging that resumes from a JSONL cache on disk.
"""

from selalign.judges.base import (
    ARENA_HARD_LABELS,
    Judge,
    JudgeError,
    JudgeRequestError,
    JudgeUnavailableError,
    Judgment,
    parse_alpaca_eval_choice,
    parse_arena_hard_verdict,
    parse_mt_bench_rating,
)
from selalign.judges.batch import JudgeRequest, judge_all
from selalign.judges.cache import JudgmentCache
from selalign.judges.openai import OpenAIJudge

__all__ = [
    "ARENA_HARD_LABELS",
    "Judge",
    "JudgeError",
    "JudgeRequest",
    "JudgeRequestError",
    "JudgeUnavailableError",
    "Judgment",
    "JudgmentCache",
    "OpenAIJudge",
    "judge_all",
    "parse_alpaca_eval_choice",
    "parse_arena_hard_verdict",
    "parse_mt_bench_rating",
]
