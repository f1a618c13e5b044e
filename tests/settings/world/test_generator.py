import dataclasses
import math
import random
import re
from collections import Counter

import pytest

from selalign.settings.world import SPLITS, WORLD_VERSION, World, WorldConfig
from selalign.settings.world.generator import FORMAT_RULES, NON_FINAL_MARK, PAIR_RULES
from selalign.settings.world.lexicon import COLOURS, KINDS, QUESTION_PHRASINGS, SHADED_BASES
from selalign.settings.world.scorer import MISSING_END_PENALTY, REPETITION_PENALTY


def question_keys(world, split):
    return {q.key for kind in KINDS for q in world.questions[split][kind]}


def decisive_texts(pair):
    """The text under the chosen and under the rejected decisive span."""
    [[c_start, c_end]], [[r_start, r_end]] = pair["chosen_decisive"], pair["rejected_decisive"]
    return pair["chosen"][c_start:c_end], pair["rejected"][r_start:r_end]


def value_pairs(world, split, n):
    return [pair for pair in world.preference_pairs(split, n) if pair["rule"] == "value"]


def within_binomial(count, n, p, sigmas=4):
    """``count`` successes of ``n`` draws is within ``sigmas`` standard deviations of a Binomial(n, p)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_same_seed_gives_identical_texts():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    assert a.preference_pairs("train", 200) == b.preference_pairs("train", 200)
    assert a.sft_examples(0.3, 100) == b.sft_examples(0.3, 100)
    assert a.pretraining_corpus(100) == b.pretraining_corpus(100)
    assert a.eval_prompts(50) == b.eval_prompts(50)
    assert a.fingerprint == b.fingerprint


def test_different_seed_gives_different_world():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=4))
    assert set(a.entities) != set(b.entities)
    pairs_a, pairs_b = a.preference_pairs("train", 100), b.preference_pairs("train", 100)
    assert sum(x["chosen"] == y["chosen"] for x, y in zip(pairs_a, pairs_b)) < 10
    assert a.fingerprint != b.fingerprint


def test_items_do_not_depend_on_how_many_were_asked(world):
    assert world.preference_pairs("validation", 100)[:10] == world.preference_pairs("validation", 10)
    assert world.sft_examples(0.2, 50)[:5] == world.sft_examples(0.2, 5)


def test_generation_leaves_global_random_state_alone():
    random.seed(123)
    before = random.getstate()
    World(WorldConfig(seed=5)).preference_pairs("train", 50)
    assert random.getstate() == before


def test_config_of_another_generator_version_is_refused():
    with pytest.raises(ValueError, match="version"):
        World(WorldConfig(version=WORLD_VERSION + "-old"))


def test_unknown_split_is_refused(world):
    with pytest.raises(ValueError, match="unknown split"):
        world.preference_pairs("dev", 3)


def test_splits_partition_the_questions(world):
    keys = {split: question_keys(world, split) for split in SPLITS}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    # 10 * 10 plus, 10 * 11 / 2 minus (never below zero), 9 * 9 times questions
    assert sum(len(k) for k in keys.values()) == len(world.all_questions()) == 3 * world.config.n_entities + 100 + 55 + 81
    for kind in KINDS:
        assert len(world.questions["validation"][kind]) == world.config.validation_per_kind == 20
        assert len(world.questions["test"][kind]) == world.config.test_per_kind == 60


def test_evaluation_is_balanced_over_many_distinct_test_questions(world, scorer):
    prompts = world.eval_prompts(240)
    assert Counter(p["kind"] for p in prompts) == {kind: 60 for kind in KINDS}
    assert len({scorer.question(p["prompt"]).key for p in prompts}) == 240
    assert Counter(item["kind"] for item in world.probe_items()) == {kind: 60 for kind in KINDS}
    # every run of four prompts asks one question of each kind; a second round asks the same questions, phrased anew
    assert all({p["kind"] for p in prompts[i : i + 4]} == set(KINDS) for i in range(0, 240, 4))
    again = world.eval_prompts(480)[240:]
    assert [scorer.question(p["prompt"]).key for p in again] == [scorer.question(p["prompt"]).key for p in prompts]


def test_held_out_counts_that_leave_no_training_question_are_refused():
    with pytest.raises(ValueError, match=r"236 arithmetic questions: too few to hold out 100 validation and 140 test ones"):
        World(WorldConfig(n_entities=400, validation_per_kind=100, test_per_kind=140))
    with pytest.raises(ValueError, match=r"120 colour questions: too few to hold out 60 validation and 60 test ones"):
        World(WorldConfig(validation_per_kind=60))
    with pytest.raises(ValueError, match="validation_per_kind and test_per_kind must be >= 1"):
        World(WorldConfig(test_per_kind=0))


def test_pair_prompts_come_from_their_own_split(world, scorer):
    for split in SPLITS:
        own = question_keys(world, split)
        for pair in world.preference_pairs(split, 300):
            assert scorer.question(pair["prompt"]).key in own, (split, pair["prompt"])
    test_keys = question_keys(world, "test")
    assert {scorer.question(p["prompt"]).key for p in world.eval_prompts(len(test_keys))} == test_keys


def test_pairs_have_the_contract_keys_and_unique_ids(world):
    pairs = world.preference_pairs("train", 500)
    assert set(pairs[0]) == {"id", "kind", "rule", "prompt", "chosen", "rejected", "chosen_decisive", "rejected_decisive", "flipped"}
    assert len({p["id"] for p in pairs}) == 500
    assert {p["kind"] for p in pairs} == set(KINDS)
    assert {p["rule"] for p in pairs} == set(PAIR_RULES)


def test_decisive_spans_hold_the_gold_and_a_wrong_value(world, scorer):
    for pair in value_pairs(world, "train", 1000):
        question = scorer.question(pair["prompt"])
        chosen_value, rejected_value = decisive_texts(pair)
        assert pair["chosen"] != pair["rejected"]
        assert chosen_value == question.answer
        assert rejected_value != question.answer
        pool = {"colour": COLOURS, "city": world.cities}.get(question.kind)
        if pool is None:
            assert rejected_value.isdigit()
        else:
            assert rejected_value in pool
        for side in ("chosen", "rejected"):
            [[start, end]] = pair[f"{side}_decisive"]
            assert pair[side][start - 1] == " " and pair[side][end] in ". "


def test_decisive_values_include_multi_word_and_multi_digit_ones(world):
    values = [decisive_texts(pair)[0] for pair in value_pairs(world, "train", 500)]
    assert any(" " in v and v in COLOURS for v in values)
    assert any(" " in v and v in world.cities for v in values)
    assert any(v.isdigit() and len(v) >= 2 for v in values)


def city_form(city):
    return re.sub(r"^(Port|Upper|New) .*", r"\1", re.sub(r".*(moor|ford|holm|wick| Falls)$", r"\1", city))


def cities_are_close(a, b):
    return city_form(a) == city_form(b) or a[:3] == b[:3]


def test_near_misses_are_close_to_the_gold_value():
    world = World(WorldConfig(seed=1, near_miss_prob=1.0))
    checked_cities = 0
    for pair in value_pairs(world, "train", 700):
        gold, wrong = decisive_texts(pair)
        if gold.isdigit():
            assert abs(int(gold) - int(wrong)) in (1, 2, 10)
        elif gold in COLOURS and gold.split()[-1] in SHADED_BASES:
            assert gold.split()[-1] == wrong.split()[-1]
        elif gold in world.cities and any(cities_are_close(gold, c) for c in world.cities if c != gold):
            assert cities_are_close(gold, wrong)
            checked_cities += 1
    assert checked_cities > 40


def test_filler_length_does_not_predict_the_value_preference(world):
    diffs = [len(p["chosen"]) - len(p["rejected"]) for p in value_pairs(world, "train", 4300)]
    mean = sum(diffs) / len(diffs)
    std = (sum((d - mean) ** 2 for d in diffs) / len(diffs)) ** 0.5
    assert abs(mean) < 4 * std / len(diffs) ** 0.5
    assert sum(d > 0 for d in diffs) > 1000 and sum(d < 0 for d in diffs) > 1000


def test_sft_noise_sets_the_share_of_wrong_answers(world, scorer):
    assert all(e["correct"] for e in world.sft_examples(0.0, 200))
    assert not any(e["correct"] for e in world.sft_examples(1.0, 200))
    examples = world.sft_examples(0.3, 2000)
    assert 0.26 < sum(not e["correct"] for e in examples) / len(examples) < 0.34
    train_keys = question_keys(world, "train")
    for e in examples[:300]:
        assert scorer.reward(e["prompt"], e["response"]) == (1.0 if e["correct"] else -1.0)
        assert scorer.question(e["prompt"]).key in train_keys


def test_sft_rule_noise_breaks_a_format_rule_in_that_share(world, scorer):
    assert not any(e["broken_rule"] for e in world.sft_examples(0.3, 300))
    examples = world.sft_examples(0.3, 2000, rule_noise=0.2)
    broken = Counter(e["broken_rule"] for e in examples)
    assert within_binomial(sum(n for rule, n in broken.items() if rule), 2000, 0.2) and set(broken) == {None, *FORMAT_RULES}
    assert within_binomial(sum(not e["correct"] for e in examples), 2000, 0.3)
    penalty = {None: 0.0, "final_mark": MISSING_END_PENALTY, "repeated_word": REPETITION_PENALTY}
    for e in examples[:400]:
        assert scorer.reward(e["prompt"], e["response"]) == (1.0 if e["correct"] else -1.0) - penalty[e["broken_rule"]]
        [[start, end]] = e["decisive"]
        assert scorer.asserted_values(scorer.question(e["prompt"]), e["response"][start:end])


def test_format_rule_pairs_take_their_share_and_state_the_right_value_in_both_responses(world, scorer):
    pairs = world.preference_pairs("train", 3000)
    rules = Counter(p["rule"] for p in pairs)
    assert within_binomial(rules["final_mark"] + rules["repeated_word"], 3000, 0.3)
    assert within_binomial(rules["final_mark"], rules["final_mark"] + rules["repeated_word"], 0.5)
    for pair in pairs:
        if pair["rule"] == "value":
            continue
        question = scorer.question(pair["prompt"])
        assert scorer.assess(pair["prompt"], pair["chosen"]).asserted == scorer.assess(pair["prompt"], pair["rejected"]).asserted
        assert set(scorer.assess(pair["prompt"], pair["chosen"]).asserted) == {question.answer.lower()}
    none = World(dataclasses.replace(world.config, format_rule_share=0.0)).preference_pairs("train", 300)
    assert {p["rule"] for p in none} == {"value"}


def test_format_rule_pairs_differ_only_where_their_decisive_spans_are(world):
    seen = Counter()
    for pair in world.preference_pairs("train", 2000):
        chosen, rejected = pair["chosen"], pair["rejected"]
        [[c_start, c_end]], [[r_start, r_end]] = pair["chosen_decisive"], pair["rejected_decisive"]
        if pair["rule"] == "final_mark":
            assert (c_start, c_end) == (r_start, r_end) == (len(chosen) - 1, len(chosen))
            assert chosen[-1] in ".!?" and rejected == chosen[:-1] + NON_FINAL_MARK
        elif pair["rule"] == "repeated_word":
            # the rejected response is the chosen one with the word before the split said twice more
            word = re.search(r"[A-Za-z]+$", chosen[:c_start]).group()
            assert rejected[r_start:r_end] == f" {word} {word}" and rejected[:r_start] + rejected[r_end:] == chosen
            assert (c_start, c_end) == (r_start, r_start + 1) and chosen[c_start] in " .,!?"
        seen[pair["rule"]] += 1
    assert seen["final_mark"] > 200 and seen["repeated_word"] > 200


def test_label_noise_flips_that_share_of_train_pairs_only_with_their_spans(world):
    noisy_world = World(dataclasses.replace(world.config, label_noise=0.2))
    clean, noisy = world.preference_pairs("train", 3000), noisy_world.preference_pairs("train", 3000)
    flipped = [pair["flipped"] for pair in noisy]
    assert within_binomial(sum(flipped), 3000, 0.2) and not any(pair["flipped"] for pair in clean)
    for c, n in zip(clean, noisy):
        sides = ("rejected", "chosen") if n["flipped"] else ("chosen", "rejected")
        assert (n["chosen"], n["rejected"]) == (c[sides[0]], c[sides[1]])
        assert (n["chosen_decisive"], n["rejected_decisive"]) == (c[f"{sides[0]}_decisive"], c[f"{sides[1]}_decisive"])
        assert (n["prompt"], n["rule"], n["id"]) == (c["prompt"], c["rule"], c["id"])
    for split in ("validation", "test"):
        assert noisy_world.preference_pairs(split, 500) == world.preference_pairs(split, 500)
    assert noisy_world.fingerprint != world.fingerprint and noisy_world.ladder_fingerprint == world.ladder_fingerprint


def test_out_of_range_shares_are_refused():
    with pytest.raises(ValueError, match=r"label_noise is the share of train pairs flipped, in \[0, 0.5\]"):
        World(WorldConfig(label_noise=0.7))
    with pytest.raises(ValueError, match=r"format_rule_share is a share of the pairs, in \[0, 1\]"):
        World(WorldConfig(format_rule_share=1.5))
    with pytest.raises(ValueError, match="rule_noise is a probability"):
        World(WorldConfig()).sft_examples(0.1, 3, rule_noise=-0.1)


def test_pretraining_corpus_states_facts_in_rounds_each_freshly_ordered(world):
    n_entities, n_arithmetic = len(world.entities), 236
    corpus = world.pretraining_corpus(4 * n_entities)  # two rounds of entity profiles
    profiled = [next(name for name in re.findall(r"[a-z]+", doc) if name in world.entities) for i, doc in enumerate(corpus) if i % 4 in (0, 2)]
    rounds = [profiled[:n_entities], profiled[n_entities:]]
    assert all(sorted(r) == sorted(world.entities) for r in rounds) and rounds[0] != rounds[1]
    stated = [m for i, doc in enumerate(corpus) if i % 4 == 1 for m in re.findall(r"\d+ (?:plus|minus|times) \d+", doc)]
    assert len(set(stated[:n_arithmetic])) == len(set(stated[n_arithmetic : 2 * n_arithmetic])) == n_arithmetic
    assert stated[:n_arithmetic] != stated[n_arithmetic : 2 * n_arithmetic]


def test_pretraining_corpus_states_every_fact_and_no_held_out_question(world):
    corpus = world.pretraining_corpus()
    assert len(corpus) == world.documents_covering_all_facts()
    text = "\n".join(corpus)
    for entity in world.entities.values():
        profiles = [d for d in corpus if re.match(rf"(The|The colour of the|The home city of the|The number of legs of the) {entity.name}\b", d)]
        assert any(re.search(rf"\b{entity.colour}\b", d) and entity.city in d and re.search(rf"\b{entity.legs} legs?\b|legs of the {entity.name} is {entity.legs}\.", d) for d in profiles), entity
    for q in world.all_questions():
        if q.kind == "arithmetic":
            assert re.search(rf"\b{q.subject} (is|equals) {q.answer}\.", text), q
    for split in ("validation", "test"):
        for q in (q for kind in KINDS for q in world.questions[split][kind]):
            slots = {"name": q.subject} if q.operands is None else dict(zip(("a", "op", "b"), q.operands))
            assert not any(p.format(**slots) in text for p in QUESTION_PHRASINGS[q.kind]), q


def test_near_miss_prob_sets_how_often_wrong_colours_share_the_hue():
    def same_hue_share(near_miss_prob):
        world = World(WorldConfig(seed=2, near_miss_prob=near_miss_prob))
        same = []
        for pair in value_pairs(world, "train", 2000):
            gold, wrong = decisive_texts(pair)
            if gold in COLOURS and gold.split()[-1] in SHADED_BASES:
                same.append(gold.split()[-1] == wrong.split()[-1])
        assert len(same) > 100
        return sum(same) / len(same)

    assert same_hue_share(0.0) < 0.25
    assert 0.4 < same_hue_share(0.5) < 0.75
