"""The world's gold scorer: rule-based, it scores any response text to a world question, model generations included.

Reward of ``response`` to ``prompt``::

    reward = correctness - REPETITION_PENALTY * repetitive - MISSING_END_PENALTY * missing_end

    correctness  +1  the response asserts at least one value of the question's kind and every
                     asserted value equals the gold answer
                 -1  it asserts a value that differs from the gold answer (a response that lists
                     several values, one of them right, is wrong)
                  0  it asserts no value of the question's kind
    repetitive   the same sentence twice, the same word three times in a row, or one word
                 3-gram three or more times (case-insensitive)
    missing_end  the stripped response is empty or does not end with ".", "!" or "?"

so rewards lie in [-1.75, 1]. Every response the generator writes scores exactly what its pair encodes: a chosen
response +1; a rejected one -1 when the stated value decides the pair, 1 - MISSING_END_PENALTY when it ends with a
comma instead of a sentence mark (``final_mark``), 1 - REPETITION_PENALTY when it says a word three times in a row
(``repeated_word``). Asserted values are found anywhere in the response, case-insensitively. Colour questions
look for the world's colours and city questions for its city names, as whole words (longest match
first, so "dark green" is not read as "green"); legs and arithmetic questions look for decimal
numbers (digits only, no number words; "6legs" counts as 6). For arithmetic the question's own
expression ("7 plus 5") is removed first, so restating the question asserts nothing.

The question is parsed from the prompt, which may be wrapped in other text (a chat format): the
operands ``a plus|minus|times b``, or else the first known entity name together with a kind
keyword ("colour", "legs", "live"/"city").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from selalign.settings.base import GoldScorer, GoldScores
from selalign.settings.world import lexicon
from selalign.settings.world.generator import Question, World, arithmetic_result

REPETITION_PENALTY = 0.5
MISSING_END_PENALTY = 0.25

_ARITHMETIC = re.compile(r"\b(\d+)\s+(plus|minus|times)\s+(\d+)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?!\d)")
_WORD = re.compile(r"[a-z0-9']+")
_LOWER_WORD = re.compile(r"\b[a-z]+\b")
_SENTENCE_END = re.compile(r"[.!?]+")
_KIND_KEYWORDS = {
    "colour": re.compile(r"\bcolou?r\b", re.IGNORECASE),
    "legs": re.compile(r"\blegs?\b", re.IGNORECASE),
    "city": re.compile(r"\b(?:live|lives|city)\b", re.IGNORECASE),
}


@dataclass(frozen=True)
class Assessment:
    """The scorer's reading of one response: what it asserted and how it scored."""

    question: Question
    asserted: tuple[str, ...]
    correctness: float
    repetitive: bool
    missing_end: bool

    @property
    def reward(self) -> float:
        return self.correctness - REPETITION_PENALTY * self.repetitive - MISSING_END_PENALTY * self.missing_end


class WorldScorer(GoldScorer):
    """Rule-based reward of the world (see the module docstring for the exact definition).

    ``score`` gives each answer's reward and the breakdown ``accuracy``, ``wrong``, ``no_value`` (1 or 0: the answer
    states only the gold value, a wrong value, or no value of the question's kind: right, wrong or abstaining),
    ``accuracy_if_stated`` (``accuracy`` over the answers that state a value, None for the others: a gain that comes
    from abstaining does not show here), ``repetitive``, ``missing_end``, and ``accuracy/<kind>`` (None for answers
    to other kinds of question).
    """

    def __init__(self, world: World):
        self.world = world
        self._value_patterns = {"colour": _alternation(lexicon.COLOURS), "city": _alternation(world.cities)}

    def question(self, prompt: str) -> Question:
        """The world question asked by ``prompt``; ValueError when it asks none."""
        arithmetic = _ARITHMETIC.search(prompt)
        if arithmetic:
            a, operator, b = int(arithmetic.group(1)), arithmetic.group(2).lower(), int(arithmetic.group(3))
            return Question("arithmetic", f"{a} {operator} {b}", str(arithmetic_result(a, operator, b)), (a, operator, b))
        entity = next((self.world.entities[w] for w in _LOWER_WORD.findall(prompt.lower()) if w in self.world.entities), None)
        kinds = [kind for kind, keyword in _KIND_KEYWORDS.items() if keyword.search(prompt)]
        if entity is None or len(kinds) != 1:
            raise ValueError(f"prompt asks no question of this world (entity: {entity and entity.name}, kinds: {kinds}): {prompt!r}")
        kind = kinds[0]
        answer = {"colour": entity.colour, "city": entity.city, "legs": str(entity.legs)}[kind]
        return Question(kind, entity.name, answer)

    def asserted_values(self, question: Question, response: str) -> tuple[str, ...]:
        """Values of the question's kind that ``response`` states, normalised, in order of appearance."""
        if question.kind in self._value_patterns:
            return tuple(" ".join(m.split()).lower() for m in self._value_patterns[question.kind].findall(response))
        if question.operands is not None:
            a, operator, b = question.operands
            response = re.sub(rf"\b{a}\s+{operator}\s+{b}\b", " ", response, flags=re.IGNORECASE)
        return tuple(_normalise_number(m) for m in _NUMBER.findall(response))

    def assess(self, prompt: str, response: str) -> Assessment:
        question = self.question(prompt)
        asserted = self.asserted_values(question, response)
        gold = question.answer.lower()
        if not asserted:
            correctness = 0.0
        elif all(value == gold for value in asserted):
            correctness = 1.0
        else:
            correctness = -1.0
        stripped = response.strip()
        return Assessment(question, asserted, correctness, is_repetitive(stripped), not stripped or stripped[-1] not in ".!?")

    def reward(self, prompt: str, response: str) -> float:
        return self.assess(prompt, response).reward

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return self.score(prompts, responses).rewards

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> GoldScores:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        assessments = [self.assess(p, r) for p, r in zip(prompts, responses)]
        breakdown: dict[str, list[float | None]] = {
            "accuracy": [float(a.correctness == 1) for a in assessments],
            "wrong": [float(a.correctness == -1) for a in assessments],
            "no_value": [float(a.correctness == 0) for a in assessments],
            "accuracy_if_stated": [float(a.correctness == 1) if a.correctness else None for a in assessments],
            "repetitive": [float(a.repetitive) for a in assessments],
            "missing_end": [float(a.missing_end) for a in assessments],
        }
        for kind in lexicon.KINDS:
            breakdown[f"accuracy/{kind}"] = [float(a.correctness == 1) if a.question.kind == kind else None for a in assessments]
        return GoldScores([a.reward for a in assessments], breakdown)


def is_repetitive(text: str) -> bool:
    """Degenerate repetition: a sentence twice, a word three times in a row, or a word 3-gram three times."""
    sentences = [" ".join(s.lower().split()) for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if s]
    if len(sentences) != len(set(sentences)):
        return True
    words = _WORD.findall(text.lower())
    if any(words[k] == words[k + 1] == words[k + 2] for k in range(len(words) - 2)):
        return True
    trigrams = Counter(zip(words, words[1:], words[2:]))
    return any(count >= 3 for count in trigrams.values())


def _alternation(values: tuple[str, ...]) -> re.Pattern:
    """Whole-word, case-insensitive match of any of ``values``, longest first, spaces matching any whitespace."""
    ordered = sorted(values, key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(word) for word in value.split()) for value in ordered)
    return re.compile(rf"\b(?:{body})\b", re.IGNORECASE)


def _normalise_number(text: str) -> str:
    return str(int(text)) if text.isdigit() else text
