"""The synthetic preference world: a seeded knowledge base, questions about it, and texts drawn from it.

A ``World`` holds made-up entities (a colour, a home city and a number of legs each) and small
arithmetic facts. Questions are split once into train / validation / test, the same number of held-out
questions of every kind, so held-out questions never appear as prompts of another split and no kind
dominates an evaluation; every fact, held-out or not, is stated in the pretraining corpus. Responses
are filler (greeting, hedge, aside, closing) around one answer sentence.

A preference pair is decided by one of three rules (its ``rule``):

- ``value``: the chosen response states the gold value, the rejected a wrong one; the filler of the two
  is drawn independently from the same pools, so only the stated value decides;
- ``final_mark``: both state the gold value in the same text, but the rejected one ends with a comma
  where the chosen one ends with its sentence mark;
- ``repeated_word``: both state the gold value in the same text, but the rejected one says one word
  three times in a row.

The gold scorer (``selalign.settings.world.scorer``) checks exactly these rules, and the oracle's decisive
spans mark the characters where the two responses part: the values, the two final marks, or the
chosen response's next token and the rejected response's two extra words. A ``label_noise`` share of
train pairs is flipped (chosen and rejected swapped, spans with them).

Every text is a pure function of ``(config, split, index)``: item ``i`` does not depend on how many
items were asked for, so ``preference_pairs("train", 10)`` is a prefix of ``preference_pairs("train", 100)``.
No global random state is read or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass

from selalign.settings.world import lexicon

# Bump whenever a change alters any text generated for an existing config.
WORLD_VERSION = "2"

SPLITS = ("train", "validation", "test")
# What decides a preference pair: the stated value, or a format rule of the gold scorer.
PAIR_RULES = ("value", "final_mark", "repeated_word")
FORMAT_RULES = PAIR_RULES[1:]
# The mark a ``final_mark`` rejected response ends with instead of its sentence mark (the scorer's missing end).
NON_FINAL_MARK = ","

# Chance that a response has each optional filler part (drawn independently per response).
GREETING_PROB, HEDGE_PROB, ASIDE_PROB, CLOSING_PROB = 0.6, 0.5, 0.3, 0.5
# Arithmetic facts per arithmetic document of the pretraining corpus.
ARITHMETIC_BLOCK = 8
# A word a repeated_word response may repeat: letters only, so that repeating it never states a number.
_PLAIN_WORD = re.compile(r"\b[A-Za-z]+\b")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world; equal configs give identical worlds.

    Attributes:
        seed: seeds the knowledge base, the question split and every sampled text.
        n_entities: made-up creatures, each with a colour, a home city and a number of legs.
        n_cities: made-up city names the entities live in.
        max_operand: arithmetic questions use operands 1..max_operand for plus and minus
            (minus never goes below zero) and 2..max_factor for times (236 questions at 10 and 10).
        max_factor: largest operand of a "times" question.
        validation_per_kind, test_per_kind: questions of each kind held out per split; equal counts
            make every evaluation balanced over the kinds (4 * test_per_kind test questions).
        near_miss_prob: probability that a wrong answer is a near miss (a number off by 1, 2 or 10,
            a colour of the same hue, a city of the same name form) rather than any other value.
        format_rule_share: share of preference pairs decided by a format rule (``final_mark`` or
            ``repeated_word``, equally often) rather than by the stated value.
        label_noise: share of *train* pairs whose chosen and rejected responses are swapped (a
            robustness arm); validation and test pairs are never flipped. It changes no text and no
            model of the ladder (``ladder_fingerprint``).
        version: the generator version the config was written for; must equal ``WORLD_VERSION``.
    """

    seed: int = 0
    n_entities: int = 120
    n_cities: int = 30
    max_operand: int = 10
    max_factor: int = 10
    validation_per_kind: int = 20
    test_per_kind: int = 60
    near_miss_prob: float = 0.5
    format_rule_share: float = 0.3
    label_noise: float = 0.0
    version: str = WORLD_VERSION


@dataclass(frozen=True)
class Entity:
    name: str
    colour: str
    city: str
    legs: int


@dataclass(frozen=True)
class Question:
    """One question of the world and its gold answer.

    ``subject`` is the entity name for colour / city / legs questions, and ``operands``
    ``(a, operator, b)`` for arithmetic ones (``subject`` is then ``"a operator b"``).
    """

    kind: str
    subject: str
    answer: str
    operands: tuple[int, str, int] | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True)
class RenderedResponse:
    """A response text and the [start, end) character span of the value it asserts."""

    text: str
    value_span: tuple[int, int]


@dataclass(frozen=True)
class BrokenResponse:
    """A response that breaks a format rule, made from a well-formed one (``World.break_rule``).

    ``text`` states the same value as the well-formed response, at ``value_span``; ``kept_span`` (in the
    well-formed text) and ``broken_span`` (in ``text``) are where the two part: the two final marks, or the
    well-formed text's next character and the two inserted words (with their spaces).
    """

    text: str
    value_span: tuple[int, int]
    kept_span: tuple[int, int]
    broken_span: tuple[int, int]


def arithmetic_result(a: int, operator: str, b: int) -> int:
    if operator == "plus":
        return a + b
    if operator == "minus":
        return a - b
    if operator == "times":
        return a * b
    raise ValueError(f"unknown arithmetic operator {operator!r}; expected one of {lexicon.ARITHMETIC_OPERATORS}")


class World:
    """A seeded knowledge base with its question splits and text samplers.

    Public data: ``entities`` (name -> Entity), ``cities`` (tuple of city names),
    ``questions[split][kind]`` (list of Question). Samplers: ``preference_pairs``,
    ``eval_prompts``, ``sft_examples``, ``pretraining_corpus``.
    """

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        if self.config.version != WORLD_VERSION:
            raise ValueError(
                f"world config was written for generator version {self.config.version!r}, this generator is "
                f"{WORLD_VERSION!r}; its texts would differ from the ones the config was made with"
            )
        if self.config.n_cities < 2:
            raise ValueError("a world needs at least two cities so that a wrong city exists")
        if self.config.validation_per_kind < 1 or self.config.test_per_kind < 1:
            raise ValueError(f"validation_per_kind and test_per_kind must be >= 1, got {self.config.validation_per_kind} and {self.config.test_per_kind}")
        if not 0.0 <= self.config.format_rule_share <= 1.0:
            raise ValueError(f"format_rule_share is a share of the pairs, in [0, 1]; got {self.config.format_rule_share}")
        if not 0.0 <= self.config.label_noise <= 0.5:
            raise ValueError(f"label_noise is the share of train pairs flipped, in [0, 0.5] (above, most labels are wrong); got {self.config.label_noise}")
        rng = random.Random(f"{self.config.seed}/knowledge")
        reserved = _lexicon_words()
        self.cities: tuple[str, ...] = _make_cities(rng, self.config.n_cities, reserved)
        reserved |= {word.lower() for city in self.cities for word in city.split()}
        names = _make_entity_names(rng, self.config.n_entities, reserved)
        self.entities: dict[str, Entity] = {name: _make_entity(rng, name, self.cities) for name in names}
        self.questions: dict[str, dict[str, list[Question]]] = self._split_questions()
        self._train_questions = [q for kind in lexicon.KINDS for q in self.questions["train"][kind]]
        self._corpus_arithmetic = _arithmetic_questions(self.config.max_operand, self.config.max_factor)
        self._rounds: dict[tuple[str, int], list[int]] = {}  # the shuffled order of each round of the corpus's facts

    @property
    def fingerprint(self) -> str:
        """Short hash of the config (version included): a cache key for anything derived from this world."""
        return _config_hash(self.config)

    @property
    def ladder_fingerprint(self) -> str:
        """``fingerprint`` of the config without its label noise: the key of the model ladder, which is trained on clean
        pairs, so that a label-noise arm starts from the same models as the clean one."""
        return _config_hash(dataclasses.replace(self.config, label_noise=0.0))

    def all_questions(self) -> list[Question]:
        return [q for split in SPLITS for kind in lexicon.KINDS for q in self.questions[split][kind]]

    # ------------------------------------------------------------------ samplers

    def preference_pairs(self, split: str, n: int) -> list[dict]:
        """``n`` preference pairs on the questions of ``split``.

        Each pair: ``id``, ``kind``, ``rule`` (``PAIR_RULES``: what decides it), ``prompt``, ``chosen``,
        ``rejected``, ``chosen_decisive`` / ``rejected_decisive`` (lists of [start, end) character spans inside
        that response: where the two responses part, see the module docstring) and ``flipped`` (True for a
        train pair that label noise swapped: its ``chosen`` is then the worse response). The question kind is
        uniform over ``lexicon.KINDS``, the question uniform over that kind's questions in the split; the rule is
        a format rule with probability ``format_rule_share``, each format rule equally often.
        """
        self._check_split(split)
        pairs = []
        for i in range(n):
            rng = self._item_rng("pairs", split, i)
            question = self._sample_question(rng, split)
            prompt = self.render_prompt(rng, question)
            rule = rng.choice(FORMAT_RULES) if rng.random() < self.config.format_rule_share else "value"
            chosen = self.render_response(rng, question, question.answer)
            if rule == "value":
                rejected = self.render_response(rng, question, self.wrong_value(rng, question))
                texts, spans = (chosen.text, rejected.text), ([list(chosen.value_span)], [list(rejected.value_span)])
            else:
                broken = self.break_rule(rng, rule, question, chosen)
                texts, spans = (chosen.text, broken.text), ([list(broken.kept_span)], [list(broken.broken_span)])
            flipped = split == "train" and self._item_rng("label-noise", split, i).random() < self.config.label_noise
            if flipped:
                texts, spans = texts[::-1], spans[::-1]
            pairs.append({
                "id": f"{split}-{i}",
                "kind": question.kind,
                "rule": rule,
                "prompt": prompt,
                "chosen": texts[0],
                "rejected": texts[1],
                "chosen_decisive": spans[0],
                "rejected_decisive": spans[1],
                "flipped": flipped,
            })
        return pairs

    def eval_prompts(self, n: int, split: str = "test") -> list[dict]:
        """``n`` prompts (``id``, ``kind``, ``prompt``) on held-out questions for generation-based evaluation.

        Questions come in a fixed order that alternates kinds and visits every question of ``split``
        once before any repeats; a repeated question gets a freshly drawn phrasing.
        """
        self._check_split(split)
        order = _interleave([self.questions[split][kind] for kind in lexicon.KINDS])
        prompts = []
        for i in range(n):
            question = order[i % len(order)]
            rng = self._item_rng("eval", split, i)
            prompts.append({"id": f"eval-{split}-{i}", "kind": question.kind, "prompt": self.render_prompt(rng, question)})
        return prompts

    def sft_examples(self, noise: float, n: int, split: str = "train", rule_noise: float = 0.0) -> list[dict]:
        """``n`` prompt/response demonstrations; with probability ``noise`` the response states a wrong value, and,
        independently, with probability ``rule_noise`` it breaks a format rule (``FORMAT_RULES``, equally often).

        Each example: ``id``, ``kind``, ``prompt``, ``response``, ``correct`` (bool: it states the gold value),
        ``broken_rule`` (None or the format rule it breaks) and ``decisive`` (the span of the stated value).
        Responses follow the same distribution as the chosen (or, when wrong or broken, the rejected) side of
        preference pairs.
        """
        for name, share in (("noise", noise), ("rule_noise", rule_noise)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} is a probability, got {share}")
        self._check_split(split)
        examples = []
        for i in range(n):
            rng = self._item_rng("sft", split, i)
            question = self._sample_question(rng, split)
            prompt = self.render_prompt(rng, question)
            correct = rng.random() >= noise
            value = question.answer if correct else self.wrong_value(rng, question)
            response = self.render_response(rng, question, value)
            broken_rule = rng.choice(FORMAT_RULES) if rng.random() < rule_noise else None
            if broken_rule is not None:
                broken = self.break_rule(rng, broken_rule, question, response)
                response = RenderedResponse(broken.text, broken.value_span)
            examples.append({
                "id": f"sft-{split}-{i}",
                "kind": question.kind,
                "prompt": prompt,
                "response": response.text,
                "correct": correct,
                "broken_rule": broken_rule,
                "decisive": [list(response.value_span)],
            })
        return examples

    def pretraining_corpus(self, n: int | None = None) -> list[str]:
        """``n`` plain-text documents (default ``documents_covering_all_facts()``), all statements true.

        Document ``i`` by ``i % 4``: 0 and 2 describe the next entity (its three facts in shuffled order and
        phrasing); 1 lists the next ``ARITHMETIC_BLOCK`` arithmetic facts; 3 is a question and a correct response,
        on a *train* question. Entities and arithmetic facts come in rounds, each round every one of them once in a
        freshly shuffled order (a fixed order, repeated, would let a model predict a fact from the facts before it
        rather than from what it is about). So every fact of every split is stated, but held-out questions never
        appear in question/answer form.
        """
        n = self.documents_covering_all_facts() if n is None else n
        entities = list(self.entities.values())
        documents = []
        for i in range(n):
            rng = self._item_rng("corpus", "all", i)
            slot = i % 4
            if slot in (0, 2):
                documents.append(self._entity_profile(rng, self._in_rounds("corpus-entities", entities, i // 2)))
            elif slot == 1:
                block = [self._in_rounds("corpus-arithmetic", self._corpus_arithmetic, (i // 4) * ARITHMETIC_BLOCK + k) for k in range(ARITHMETIC_BLOCK)]
                documents.append(" ".join(self._fact_sentence(rng, q, named=True) for q in block))
            else:
                question = rng.choice(self._train_questions)
                documents.append(f"{self.render_prompt(rng, question)} {self.render_response(rng, question, question.answer).text}")
        return documents

    def _in_rounds(self, stream: str, items: list, position: int):
        """Item ``position`` of an endless sequence of rounds, each round ``items`` in its own seeded shuffle."""
        round_index, offset = divmod(position, len(items))
        key = (stream, round_index)
        if key not in self._rounds:
            order = list(range(len(items)))
            random.Random(f"{self.config.seed}/{stream}/{round_index}").shuffle(order)
            self._rounds[key] = order
        return items[self._rounds[key][offset]]

    def documents_covering_all_facts(self) -> int:
        """Smallest corpus size at which ``pretraining_corpus`` has stated every entity and arithmetic fact."""
        return max(2 * len(self.entities), 4 * math.ceil(len(self._corpus_arithmetic) / ARITHMETIC_BLOCK))

    def probe_items(self, split: str = "test") -> list[dict]:
        """The knowledge probe's items: every question of ``split`` with one fixed prompt phrasing and, for every
        candidate value of its kind (every value a question of that kind has as its answer in this world), the fixed
        answer sentence stating it. ``gold`` is the index of the right candidate."""
        self._check_split(split)
        candidates = {kind: sorted({q.answer for s in SPLITS for q in self.questions[s][kind]}, key=_value_order) for kind in lexicon.KINDS}
        items = []
        for kind in lexicon.KINDS:
            for question in self.questions[split][kind]:
                prompt = lexicon.QUESTION_PHRASINGS[kind][0].format(**_slots(question))
                template = lexicon.NAMED_ANSWERS[kind][0]
                answers = [_fill(template, question, value)[0] for value in candidates[kind]]
                items.append({"kind": kind, "prompt": prompt, "answers": answers, "gold": candidates[kind].index(question.answer)})
        return items

    # ------------------------------------------------------------------ rendering

    def render_prompt(self, rng: random.Random, question: Question) -> str:
        phrasing = rng.choice(lexicon.QUESTION_PHRASINGS[question.kind])
        return phrasing.format(**_slots(question))

    def render_response(self, rng: random.Random, question: Question, value: str) -> RenderedResponse:
        """Optional greeting, the (optionally hedged) answer sentence stating ``value``, optional aside and closing."""
        parts = []
        if rng.random() < GREETING_PROB:
            parts.append(rng.choice(lexicon.GREETINGS))
        answer = rng.choice(lexicon.NAMED_ANSWERS[question.kind] + lexicon.PRONOUN_ANSWERS[question.kind])
        if rng.random() < HEDGE_PROB:
            answer = f"{rng.choice(lexicon.HEDGES)} {answer[0].lower()}{answer[1:]}"
        prefix = " ".join(parts + [""])
        sentence, value_start = _fill(answer, question, value)
        parts.append(sentence)
        if rng.random() < ASIDE_PROB:
            parts.append(rng.choice(lexicon.ASIDES))
        if rng.random() < CLOSING_PROB:
            parts.append(rng.choice(lexicon.CLOSINGS))
        start = len(prefix) + value_start
        return RenderedResponse(" ".join(parts), (start, start + len(value)))

    def break_rule(self, rng: random.Random, rule: str, question: Question, response: RenderedResponse) -> BrokenResponse:
        """``response`` made to break format rule ``rule`` and nothing else (the gold scorer penalises exactly that).

        ``final_mark``: its final sentence mark becomes ``NON_FINAL_MARK`` (a missing end). ``repeated_word``: one of its
        words, drawn uniformly, is said three times in a row (repetition); the stated value and, for arithmetic, the
        question's own expression (``7 plus 5``) are never the word, so what the response asserts does not change.
        """
        text, (value_start, value_end) = response.text, response.value_span
        if rule == "final_mark":
            end = len(text)
            if text[-1] not in ".!?":
                raise ValueError(f"a response breaking the final_mark rule must first end with a sentence mark: {text!r}")
            return BrokenResponse(text[:-1] + NON_FINAL_MARK, response.value_span, (end - 1, end), (end - 1, end))
        if rule != "repeated_word":
            raise ValueError(f"unknown format rule {rule!r}; expected one of {FORMAT_RULES}")
        protected = [(value_start, value_end)]
        if question.operands is not None:
            protected += [m.span() for m in re.finditer(rf"\b{re.escape(question.subject)}\b", text)]
        words = [m for m in _PLAIN_WORD.finditer(text) if not any(m.start() < end and start < m.end() for start, end in protected)]
        word = rng.choice(words)
        inserted = f" {word.group()}" * 2
        at = word.end()
        shift = len(inserted) if value_start >= at else 0
        return BrokenResponse(text[:at] + inserted + text[at:], (value_start + shift, value_end + shift), (at, at + 1), (at, at + len(inserted)))

    def wrong_value(self, rng: random.Random, question: Question) -> str:
        """A value other than the gold answer: a near miss with probability ``near_miss_prob``, else any other value.

        Near misses: a colour of the same hue, a city of the same name form or first three letters,
        a number off by 1, 2 or 10.
        Other numbers are uniform on 0..2 * gold + 10.
        """
        near = rng.random() < self.config.near_miss_prob
        if question.kind == "colour":
            candidates = _near_colours(question.answer) if near else lexicon.COLOURS
        elif question.kind == "city":
            candidates = _near_cities(question.answer, self.cities) if near else self.cities
        else:
            gold = int(question.answer)
            if not near:
                while (value := rng.randint(0, 2 * gold + 10)) == gold:
                    pass
                return str(value)
            candidates = [str(v) for v in (gold - 2, gold - 1, gold + 1, gold + 2, gold - 10, gold + 10) if v >= 0]
        return rng.choice([c for c in candidates if c != question.answer])

    # ------------------------------------------------------------------ internals

    def _item_rng(self, stream: str, split: str, index: int) -> random.Random:
        return random.Random(f"{self.config.seed}/{stream}/{split}/{index}")

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def _sample_question(self, rng: random.Random, split: str) -> Question:
        return rng.choice(self.questions[split][rng.choice(lexicon.KINDS)])

    def _split_questions(self) -> dict[str, dict[str, list[Question]]]:
        """Per kind, a seeded shuffle: the first ``validation_per_kind`` questions validate, the next ``test_per_kind`` test."""
        by_kind = {kind: [] for kind in lexicon.KINDS}
        for entity in self.entities.values():
            by_kind["colour"].append(Question("colour", entity.name, entity.colour))
            by_kind["city"].append(Question("city", entity.name, entity.city))
            by_kind["legs"].append(Question("legs", entity.name, str(entity.legs)))
        by_kind["arithmetic"] = _arithmetic_questions(self.config.max_operand, self.config.max_factor)
        splits = {split: {} for split in SPLITS}
        for kind, questions in by_kind.items():
            shuffled = list(questions)
            random.Random(f"{self.config.seed}/split/{kind}").shuffle(shuffled)
            n_val, n_test = self.config.validation_per_kind, self.config.test_per_kind
            if n_val + n_test >= len(shuffled):
                raise ValueError(
                    f"the world has {len(shuffled)} {kind} questions: too few to hold out {n_val} validation and {n_test} test ones "
                    f"and keep some for training (raise n_entities, max_operand or max_factor, or lower validation_per_kind and test_per_kind)"
                )
            splits["validation"][kind] = shuffled[:n_val]
            splits["test"][kind] = shuffled[n_val : n_val + n_test]
            splits["train"][kind] = shuffled[n_val + n_test :]
        return splits

    def _entity_profile(self, rng: random.Random, entity: Entity) -> str:
        facts = [Question("colour", entity.name, entity.colour), Question("city", entity.name, entity.city),
                 Question("legs", entity.name, str(entity.legs))]
        rng.shuffle(facts)
        return " ".join(self._fact_sentence(rng, q, named=(k == 0 or rng.random() < 0.5)) for k, q in enumerate(facts))

    def _fact_sentence(self, rng: random.Random, question: Question, named: bool) -> str:
        templates = lexicon.NAMED_ANSWERS if named else lexicon.PRONOUN_ANSWERS
        return _fill(rng.choice(templates[question.kind]), question, question.answer)[0]


def _config_hash(config: WorldConfig) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:12]


def _value_order(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _slots(question: Question) -> dict[str, object]:
    if question.operands is None:
        return {"name": question.subject}
    a, operator, b = question.operands
    return {"a": a, "op": operator, "b": b}


def _fill(template: str, question: Question, value: str) -> tuple[str, int]:
    """``template`` with its slots filled, and the character offset at which ``value`` starts."""
    slots = _slots(question)
    slots["legs_noun"] = "leg" if value == "1" else "legs"
    head, tail = template.split("{value}")
    head_text = head.format(**slots)
    return head_text + value + tail.format(**slots), len(head_text)


def _arithmetic_questions(max_operand: int, max_factor: int) -> list[Question]:
    triples = [(a, "plus", b) for a in range(1, max_operand + 1) for b in range(1, max_operand + 1)]
    triples += [(a, "minus", b) for a in range(1, max_operand + 1) for b in range(1, a + 1)]
    triples += [(a, "times", b) for a in range(2, max_factor + 1) for b in range(2, max_factor + 1)]
    return [Question("arithmetic", f"{a} {op} {b}", str(arithmetic_result(a, op, b)), (a, op, b)) for a, op, b in triples]


def _lexicon_words() -> set[str]:
    texts = [*lexicon.COLOURS, *lexicon.ARITHMETIC_OPERATORS, *lexicon.GREETINGS, *lexicon.HEDGES, *lexicon.ASIDES, *lexicon.CLOSINGS]
    for pools in (lexicon.QUESTION_PHRASINGS, lexicon.NAMED_ANSWERS, lexicon.PRONOUN_ANSWERS):
        texts += [t for templates in pools.values() for t in templates]
    texts += [form.replace("{root}", " ") for form in lexicon.CITY_FORMS]
    words = set()
    for text in texts:
        words.update(w.lower() for w in "".join(c if c.isalpha() else " " for c in text).split())
    return words


def _make_cities(rng: random.Random, n: int, reserved: set[str]) -> tuple[str, ...]:
    cities: list[str] = []
    roots: set[str] = set()
    while len(cities) < n:
        root = rng.choice(lexicon.CITY_ROOT_ONSETS) + rng.choice(lexicon.CITY_ROOT_VOWELS) + rng.choice(lexicon.CITY_ROOT_CODAS)
        if rng.random() < 0.5:
            root += rng.choice(lexicon.CITY_ROOT_VOWELS) + rng.choice(lexicon.CITY_ROOT_CODAS)
        city = rng.choice(lexicon.CITY_FORMS).format(root=root)
        if root in roots or root.lower() in reserved:
            continue
        roots.add(root)
        cities.append(city)
    return tuple(cities)


def _make_entity_names(rng: random.Random, n: int, reserved: set[str]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        syllables = 2 if rng.random() < 0.7 else 3
        name = "".join(rng.choice(lexicon.NAME_ONSETS) + rng.choice(lexicon.NAME_VOWELS) + rng.choice(lexicon.NAME_CODAS) for _ in range(syllables))
        if name in seen or name in reserved or len(name) < 4:
            continue
        seen.add(name)
        names.append(name)
    return names


def _make_entity(rng: random.Random, name: str, cities: tuple[str, ...]) -> Entity:
    colour = rng.choice(lexicon.SHADED_COLOURS) if rng.random() < 0.5 else rng.choice(lexicon.BASE_COLOURS)
    roll = rng.random()
    if roll < 0.6:
        legs = rng.choice((0, 2, 4, 6, 8))
    elif roll < 0.85:
        legs = rng.randint(3, 12)
    else:
        legs = rng.randint(13, 99)
    return Entity(name, colour, rng.choice(cities), legs)


def _near_colours(colour: str) -> list[str]:
    """Colours of the same hue as ``colour`` (other shade, or shaded/plain variant of the same base)."""
    base = colour.split()[-1]
    return [c for c in lexicon.COLOURS if c.split()[-1] == base and c != colour] or [c for c in lexicon.BASE_COLOURS if c != colour]


def _near_cities(city: str, cities: tuple[str, ...]) -> list[str]:
    """Cities of the same name form as ``city`` ("...moor", "Port ...") or with the same first three letters.

    Falls back to all other cities when none is that close.
    """
    near = [c for c in cities if c != city and (_city_form(c) == _city_form(city) or c[:3] == city[:3])]
    return near or [c for c in cities if c != city]


def _city_form(city: str) -> str:
    """The ``lexicon.CITY_FORMS`` entry a city name was built from."""
    for form in lexicon.CITY_FORMS:
        head, tail = form.split("{root}")
        if city.startswith(head) and city.endswith(tail) and len(city) > len(head) + len(tail):
            return form
    raise ValueError(f"{city!r} matches no city form")


def _interleave(lists: list[list[Question]]) -> list[Question]:
    order = []
    for k in range(max(len(items) for items in lists)):
        order.extend(items[k] for items in lists if k < len(items))
    return order
