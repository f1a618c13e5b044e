"""Any judged benchmark as an ``Evaluation``: generate the policy's answers, judge them, aggregate the verdicts."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from selalign.benchmarks.base import Benchmark, BenchmarkItem, EvalContext, write_records
from selalign.generators.base import GenerationError, Generator, Policy, Sampling
from selalign.generators.cache import GenerationCache
from selalign.judges.base import Judge, JudgeError
from selalign.store import write_jsonl

log = logging.getLogger(__name__)


class GenerateAndJudge:
    """Runs ``benchmark`` on the policy with ``judge``.

    First checks that the judge can work (``judge.preflight()``: key present, endpoint reachable, model served), so
    that an evaluation that cannot finish fails before any answer is generated. Then the context's generator
    (``ctx.generator``) answers every user turn of the first ``limit`` items (all when None) within one conversation,
    at most ``max_new_tokens`` tokens each, at the item's temperature (``default_temperature`` when it has none) with
    the run's seed, items of one temperature in one call. Writes into ``ctx.run_dir``:

    - ``<name>_generations.jsonl``: one row per item (id, category, temperature, turns, answers, generator);
    - ``<name>_judgments.jsonl``: one ``JudgmentRecord`` per judge call, with the judge's raw reply.

    The caches live in the shared ``cache_dir`` (``paths.cache_dir``), one file per model:
    ``generations/<name>/<model>-<hash>.jsonl`` (keyed on the model's identity, the generator, the prompt and the
    sampling settings) and ``judgments/<name>/<model>-<hash>.jsonl`` (keyed on the judge and the judged prompt). A
    later evaluation of the same model, in any run dir, generates and judges only what they lack. Returns the
    benchmark's aggregate metrics.
    """

    policy_through_generator = True  # the policy is reached through ctx.generator only; no need to hold it in memory

    def __init__(
        self,
        benchmark: Benchmark,
        judge: Judge,
        cache_dir: str | os.PathLike[str],
        limit: int | None = None,
        max_new_tokens: int = 1024,
        default_temperature: float = 0.0,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.benchmark = benchmark
        self.judge = judge
        self.cache_dir = Path(cache_dir).expanduser()
        self.limit = limit
        self.max_new_tokens = max_new_tokens
        self.default_temperature = default_temperature
        self._judge_checked = False

    def temperature(self, item: BenchmarkItem) -> float:
        return self.default_temperature if item.temperature is None else item.temperature

    def preflight(self) -> None:
        """Raise ``JudgeError`` now if the judge cannot work (see ``Judge.preflight``); ``evaluate`` checks unless
        this passed already."""
        self.judge.preflight()
        self._judge_checked = True

    def answers(self, items: Sequence[BenchmarkItem], generator: Generator, policy: Policy, seed: int, cache: GenerationCache) -> dict[str, list[str]]:
        """{item id: one answer per turn}."""
        by_temperature: dict[float, list[BenchmarkItem]] = {}
        for item in items:
            by_temperature.setdefault(self.temperature(item), []).append(item)
        answers = {}
        with generator.session():  # one engine or server for every temperature and turn
            for temperature, group in sorted(by_temperature.items()):
                sampling = Sampling(self.max_new_tokens, temperature, seed)
                replies = generator.answer_turns(policy, [item.turns for item in group], sampling, cache)
                answers.update({item.id: reply for item, reply in zip(group, replies, strict=True)})
        return answers

    def _how_to_resume(self, policy: Policy) -> str:
        return (
            f"the caches in {self.cache_dir} keep what is done: `python -m selalign.evaluate benchmark={self.benchmark.name} "
            f"model.name_or_path={policy.name_or_path}` with the same model settings, generator, judge and paths.cache_dir resumes from there"
        )

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        name = self.benchmark.name
        items = self.benchmark.load(self.limit)
        if not self._judge_checked:
            self.preflight()
        policy = ctx.generation_policy()
        generation_cache = GenerationCache.in_folder(self.cache_dir / "generations" / name, policy.identity)
        try:
            answers = self.answers(items, ctx.generator, policy, ctx.seed, generation_cache)
        except GenerationError as error:
            raise GenerationError(f"{error}\n{self._how_to_resume(policy)}") from error
        generations = ctx.run_dir / f"{name}_generations.jsonl"
        write_jsonl(generations, (
            {"id": item.id, "category": item.category, "temperature": self.temperature(item), "turns": list(item.turns), "answers": answers[item.id],
             "generator": ctx.generator.identity}
            for item in items
        ))
        judgment_cache = self.cache_dir / "judgments" / name / generation_cache.path.name
        try:
            records = self.benchmark.judge(items, answers, self.judge, judgment_cache)
        except JudgeError as error:
            raise type(error)(f"{error}\n{self._how_to_resume(policy)}") from error
        judgments = ctx.run_dir / f"{name}_judgments.jsonl"
        write_records(judgments, records)
        log.info("%s: %d items; answers in %s, judgments in %s", name, len(items), generations, judgments)
        return self.benchmark.aggregate(records)
