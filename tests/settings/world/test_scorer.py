import dataclasses

import pytest

from selalign.settings.world import SPLITS, World
from selalign.settings.world.scorer import MISSING_END_PENALTY, REPETITION_PENALTY, is_repetitive


@pytest.fixture(scope="module")
def shaded_entity(world):
    """An entity whose colour is two words ("dark green"), so a plain "green" is a different value."""
    return next(e for e in world.entities.values() if " " in e.colour)


@pytest.fixture(scope="module")
def two_word_city_entity(world):
    return next(e for e in world.entities.values() if " " in e.city)


def test_colour_answers(scorer, shaded_entity):
    name, colour = shaded_entity.name, shaded_entity.colour
    base = colour.split()[-1]
    prompt = f"What colour is the {name}?"
    assert scorer.reward(prompt, f"Sure! The {name} is {colour}. Hope this helps.") == 1.0
    assert scorer.reward(prompt, f"the {name} is {colour.upper().replace(' ', '   ')}.") == 1.0
    assert scorer.reward(prompt, f"The {name} is {base}.") == -1.0
    assert scorer.reward(prompt, f"It is {colour} or maybe white.") == -1.0
    assert scorer.reward(prompt, "I do not know.") == 0.0
    assert scorer.reward(prompt, f"The {name} is {colour}") == 1.0 - MISSING_END_PENALTY
    assert scorer.reward(prompt, f"It is {colour}. It is {colour}.") == 1.0 - REPETITION_PENALTY
    assert scorer.reward(prompt, f"{base} {base} {base}") == -1.0 - REPETITION_PENALTY - MISSING_END_PENALTY


def test_garbled_and_empty_responses(scorer, shaded_entity):
    prompt = f"Which colour is the {shaded_entity.name}?"
    assert scorer.reward(prompt, "") == -MISSING_END_PENALTY
    assert scorer.reward(prompt, "zorp the the quib legs of") == -MISSING_END_PENALTY
    assert scorer.reward(prompt, f"the is {shaded_entity.colour} {shaded_entity.colour} legs") == 1.0 - MISSING_END_PENALTY
    verdict = scorer.assess(prompt, f"is is {shaded_entity.colour}. of of of the.")
    assert verdict.asserted == (shaded_entity.colour,)
    assert verdict.repetitive and not verdict.missing_end
    assert verdict.reward == 1.0 - REPETITION_PENALTY


def test_city_answers(scorer, world, two_word_city_entity):
    name, city = two_word_city_entity.name, two_word_city_entity.city
    other = next(c for c in world.cities if c != city)
    prompt = f"Where does the {name} live?"
    assert scorer.reward(prompt, f"The {name} lives in {city}.") == 1.0
    assert scorer.reward(prompt, f"it lives in {city.lower()}!") == 1.0
    assert scorer.reward(prompt, f"The {name} lives in {other}.") == -1.0
    assert scorer.reward(prompt, f"The {name} lives in {city.split()[-1]}moor.") == 0.0


def test_legs_answers(scorer, world):
    entity = next(e for e in world.entities.values() if e.legs >= 10)
    prompt = f"How many legs does the {entity.name} have?"
    assert scorer.reward(prompt, f"It has {entity.legs} legs.") == 1.0
    assert scorer.reward(prompt, f"It has {entity.legs + 1} legs.") == -1.0
    assert scorer.reward(prompt, f"It has {entity.legs}.5 legs.") == -1.0
    assert scorer.reward(prompt, f"It has {str(entity.legs)[0]} legs.") == -1.0
    assert scorer.reward(prompt, f"It has {entity.legs}legs.") == 1.0
    assert scorer.reward(prompt, "It has six legs.") == 0.0


def test_arithmetic_answers(scorer):
    assert scorer.reward("What is 7 plus 5?", "7 plus 5 is 12.") == 1.0
    assert scorer.reward("What is 7 plus 5?", "The answer is 13.") == -1.0
    assert scorer.reward("What is 7 plus 5?", "7 plus 5.") == 0.0
    assert scorer.reward("What is 7 plus 5?", "12") == 1.0 - MISSING_END_PENALTY
    assert scorer.reward("Compute 9 minus 4.", "9 minus 4 is 5.") == 1.0
    assert scorer.reward("How much is 12 times 11?", "It comes to 132.") == 1.0
    assert scorer.reward("How much is 12 times 11?", "12 times 11 is 121.") == -1.0


def test_prompt_inside_a_chat_format_is_understood(scorer, shaded_entity):
    assert scorer.reward("Question: What is 7 plus 5?\nAnswer:", "12.") == 1.0
    assert scorer.question(f"### Question\nWhat colour is the {shaded_entity.name}?\n### Answer\n").answer == shaded_entity.colour


def test_prompt_without_a_world_question_is_refused(scorer, shaded_entity):
    with pytest.raises(ValueError, match="no question"):
        scorer.question("What colour is the sky?")
    with pytest.raises(ValueError, match="no question"):
        scorer.question(f"Tell me about the {shaded_entity.name}.")


REJECTED_REWARD = {"value": -1.0, "final_mark": 1.0 - MISSING_END_PENALTY, "repeated_word": 1.0 - REPETITION_PENALTY}


def test_every_generated_pair_prefers_chosen_by_what_its_rule_encodes(world, scorer):
    for split in SPLITS:
        pairs = world.preference_pairs(split, 1000)
        prompts = [p["prompt"] for p in pairs]
        assert {p["rule"] for p in pairs} == set(REJECTED_REWARD)
        assert scorer.rewards(prompts, [p["chosen"] for p in pairs]) == [1.0] * len(pairs)
        assert scorer.rewards(prompts, [p["rejected"] for p in pairs]) == [REJECTED_REWARD[p["rule"]] for p in pairs]


def test_label_noise_reverses_exactly_the_flipped_pairs(world, scorer):
    noisy = World(dataclasses.replace(world.config, label_noise=0.3)).preference_pairs("train", 600)
    assert any(p["flipped"] for p in noisy)
    for pair in noisy:
        chosen, rejected = scorer.reward(pair["prompt"], pair["chosen"]), scorer.reward(pair["prompt"], pair["rejected"])
        assert (chosen < rejected) == pair["flipped"] and {chosen, rejected} == {1.0, REJECTED_REWARD[pair["rule"]]}


def test_breakdown_names_right_wrong_and_abstaining_answers(scorer):
    prompts = ["What is 7 plus 5?"] * 4
    scores = scorer.score(prompts, ["It is 12.", "It is 13.", "I do not know.", "It is 12 12 12"])
    assert scores.rewards == [1.0, -1.0, 0.0, 1.0 - REPETITION_PENALTY - MISSING_END_PENALTY]
    assert scores.breakdown["accuracy"] == [1.0, 0.0, 0.0, 1.0]
    assert scores.breakdown["wrong"] == [0.0, 1.0, 0.0, 0.0]
    assert scores.breakdown["no_value"] == [0.0, 0.0, 1.0, 0.0]
    assert scores.breakdown["accuracy_if_stated"] == [1.0, 0.0, None, 1.0]
    assert scores.breakdown["repetitive"] == [0.0, 0.0, 0.0, 1.0] and scores.breakdown["missing_end"] == [0.0, 0.0, 0.0, 1.0]
    assert scores.breakdown["accuracy/arithmetic"] == [1.0, 0.0, 0.0, 1.0] and scores.breakdown["accuracy/colour"] == [None] * 4


def test_batch_rewards_check_lengths(scorer):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        scorer.rewards(["What is 1 plus 1?", "What is 2 plus 2?"], ["2."])


def test_repetition_rules():
    assert not is_repetitive("Sure! The answer is 4. Hope this helps.")
    assert is_repetitive("The answer is 4. the answer   is 4!")
    assert is_repetitive("It is red red red.")
    assert is_repetitive("one two three, one two three and one two three")
    assert not is_repetitive("one two three, one two three")
