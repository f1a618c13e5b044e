"""The generator contract with a scripted generator: order, the cache, resume after a failure, multi-turn, bad input."""

from __future__ import annotations

import pytest

from selalign.generators import GenerationCache, GenerationError, Generator, Policy, Sampling

IDENTITY = {"name_or_path": "/models/policy", "dtype": "float32"}
POLICY = Policy("/models/policy", IDENTITY)
QUESTIONS = [[{"role": "user", "content": f"Question {n}?"}] for n in range(4)]


class Scripted(Generator):
    """Answers ``<content> -> <seed>``, in reverse order; fails after ``fail_after`` answers; counts what it was asked."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after, self.asked, self.released = fail_after, [], 0

    @property
    def identity(self):
        return {"engine": "scripted"}

    def generate_uncached(self, policy, conversations, sampling, on_answer):
        for index in reversed(range(len(conversations))):
            if self.fail_after is not None and len(self.asked) == self.fail_after:
                raise GenerationError("the engine went away")
            self.asked.append(conversations[index][-1]["content"])
            on_answer(index, f"{conversations[index][-1]['content']} -> {sampling.seed}")

    def release(self):
        self.released += 1


def test_answers_come_back_in_order_whatever_order_they_were_made_in():
    assert Scripted().generate(POLICY, QUESTIONS, Sampling(4, seed=3)) == [f"Question {n}? -> 3" for n in range(4)]


def test_a_failure_keeps_what_was_generated_and_a_second_call_asks_only_the_rest(tmp_path):
    cache = lambda: GenerationCache(tmp_path / "answers.jsonl", IDENTITY)  # noqa: E731
    failing = Scripted(fail_after=2)
    with pytest.raises(GenerationError, match=r"the engine went away\n2 of 4 new answers are saved in .*answers.jsonl; generating again with this model, generator and sampling settings resumes from there"):
        failing.generate(POLICY, QUESTIONS, Sampling(4), cache())
    assert len(cache()) == 2
    again = Scripted()
    assert again.generate(POLICY, QUESTIONS, Sampling(4), cache()) == [f"Question {n}? -> 0" for n in range(4)]
    assert again.asked == ["Question 1?", "Question 0?"]  # the two the failed call never answered
    assert Scripted().generate(POLICY, QUESTIONS, Sampling(4), cache()) and len(cache()) == 4


def test_without_a_cache_a_failure_says_nothing_is_kept():
    with pytest.raises(GenerationError, match="1 of 4 answers were generated; none are kept"):
        Scripted(fail_after=1).generate(POLICY, QUESTIONS, Sampling(4))


class Forgetful(Scripted):
    def generate_uncached(self, policy, conversations, sampling, on_answer):
        on_answer(0, "only the first")


class WrongType(Scripted):
    def generate_uncached(self, policy, conversations, sampling, on_answer):
        on_answer(0, None)


def test_a_missing_answer_is_an_error_never_an_empty_string(tmp_path):
    with pytest.raises(GenerationError, match="returned no answer for 3 conversation"):
        Forgetful().generate(POLICY, QUESTIONS, Sampling(4))
    with pytest.raises(GenerationError, match="gave a NoneType instead of an answer for conversation 0"):
        WrongType().generate(POLICY, QUESTIONS, Sampling(4), GenerationCache(tmp_path / "answers.jsonl", IDENTITY))
    assert len(GenerationCache(tmp_path / "answers.jsonl", IDENTITY)) == 0


def test_the_engine_is_released_after_each_call_or_at_the_end_of_a_session():
    generator = Scripted()
    generator.generate(POLICY, QUESTIONS, Sampling(4))
    assert generator.released == 1
    with generator.session():
        generator.generate(POLICY, QUESTIONS, Sampling(4, seed=1))
        with generator.session():
            generator.answer_turns(POLICY, [["a", "b"]], Sampling(4))
        assert generator.released == 1
    assert generator.released == 2


def test_answer_turns_asks_each_turn_after_the_earlier_answers():
    generator = Scripted()
    assert generator.answer_turns(POLICY, [["a", "b"], ["c"]], Sampling(4)) == [["a -> 0", "b -> 0"], ["c -> 0"]]
    assert generator.asked == ["c", "a", "b"]


def test_a_cache_of_another_model_is_refused(tmp_path):
    generator = Scripted()
    with pytest.raises(ValueError, match="holds the answers of another model"):
        generator.generate(POLICY, QUESTIONS, Sampling(4), GenerationCache(tmp_path / "answers.jsonl", {"name_or_path": "other"}))
    assert generator.asked == []


@pytest.mark.parametrize(("conversations", "message"), [
    ([[{"role": "user", "content": "Hi?"}], [{"role": "assistant", "content": "Hello."}]], "conversation 1 ends with a 'assistant' message"),
    (["Hi?"], "conversation 0 must be a non-empty list"),
    ([[]], "conversation 0 must be a non-empty list"),
    ([[{"role": "user"}]], "conversation 0 has a message that is not a {role, content} dict"),
])
def test_bad_conversations_are_named_before_anything_is_generated(conversations, message):
    generator = Scripted()
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        generator.generate(POLICY, conversations, Sampling(4))
    assert generator.asked == []


def test_sampling_settings_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        Sampling(0)
    with pytest.raises(ValueError, match="temperature must be >= 0, got -0.5"):
        Sampling(4, temperature=-0.5)
