"""data=sentiment: pairs from the setting's sampled answers, best against worst under VADER."""

import json

import pytest

from selalign.models import load_tokenizer
from selalign.settings.sentiment import SentimentDataModule
from selalign.settings.sentiment.pairs import preference_pair


def samples_file(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [
    {"id": f"sentiment-{n}", "prompt": f"review {n}", "samples": [f"great {n}", f"fine {n}", f"awful {n}"], "scores": [0.8, 0.1 * (n % 3), -0.6]}
    for n in range(8)
]


def test_chosen_is_the_best_sample_rejected_the_worst_and_validation_comes_first(tiny_chat_lm, tmp_path):
    rows = ROWS[:7] + [{"id": "sentiment-7", "prompt": "review 7", "samples": ["ok", "fine", "so so"], "scores": [0.1, 0.2, 0.0]}]  # gap too small
    data = SentimentDataModule(str(samples_file(tmp_path / "samples.jsonl", rows)), num_validation_prompts=3, min_gap=0.3, tokenizer=load_tokenizer(str(tiny_chat_lm)), batch_size=2)
    splits, names = data.load_splits()
    assert [p["id"] for p in splits["validation"]] == ["sentiment-0", "sentiment-1", "sentiment-2"]
    assert [p["id"] for p in splits["train"]] == [f"sentiment-{n}" for n in range(3, 7)]
    assert all(p["chosen"].startswith("great") and p["rejected"].startswith("awful") for p in list(splits["train"]) + list(splits["validation"]))
    assert data.stats["dropped_small_gap"] == 1 and data.stats["labeler/chosen_mean"] == pytest.approx(0.8)
    assert "samples.jsonl (train prompts)" in names["train"]


def test_too_few_prompts_for_a_train_split_fails_clearly(tiny_chat_lm, tmp_path):
    data = SentimentDataModule(str(samples_file(tmp_path / "samples.jsonl", ROWS[:3])), num_validation_prompts=3, tokenizer=load_tokenizer(str(tiny_chat_lm)))
    with pytest.raises(ValueError, match="none left for training"):
        data.load_splits()


def test_small_gaps_and_equal_texts_give_no_pair():
    row = {"id": "sentiment-0", "prompt": "p", "samples": ["good", "fine", "good"], "scores": [0.44, 0.2, 0.44]}
    assert preference_pair(row, min_gap=0.3) is None
    assert preference_pair(row, min_gap=0.2) == {"id": "sentiment-0", "prompt": "p", "chosen": "good", "rejected": "fine", "chosen_score": 0.44, "rejected_score": 0.2}
    assert preference_pair({**row, "samples": ["same", "same", "same"]}, min_gap=0.0) is None
