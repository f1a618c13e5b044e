"""``data=sentiment``: on-policy preference pairs for sentiment-controlled generation on Rotten Tomatoes prompts."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

import datasets

from selalign.data.datamodule import PreferenceDataModule
from selalign.settings.sentiment.pairs import preference_pair


class SentimentDataModule(PreferenceDataModule):
    """Pairs of the start model's sampled answers, ranked by VADER (the sentiment setting's ``samples`` artifact).

    The first ``num_validation_prompts`` rows of ``samples`` give the validation pairs, the others the train pairs;
    a prompt whose samples' VADER scores differ by less than ``min_gap`` gives none. ``stats`` gains the number of
    prompts, the pairs dropped for a small gap and the mean VADER score of the samples, the chosen and the rejected
    answers (train and validation together). Other keyword arguments go to ``PreferenceDataModule``.
    """

    def __init__(self, samples: str, num_validation_prompts: int = 32, min_gap: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        if num_validation_prompts < 1:
            raise ValueError(f"need at least one validation prompt, got {num_validation_prompts}")
        self.samples, self.num_validation_prompts, self.min_gap = Path(samples), num_validation_prompts, min_gap

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, str]]:
        with open(self.samples, encoding="utf-8") as file:
            rows = [json.loads(line) for line in file]
        if len(rows) <= self.num_validation_prompts:
            raise ValueError(f"{self.samples} holds {len(rows)} prompts: none left for training after {self.num_validation_prompts} validation prompts")
        pairs = [preference_pair(row, self.min_gap) for row in rows]
        kept = [pair for pair in pairs if pair is not None]
        self.stats |= {
            "prompts": len(rows),
            "dropped_small_gap": len(rows) - len(kept),
            "labeler/sample_mean": fmean(score for row in rows for score in row["scores"]),
            "labeler/chosen_mean": fmean(pair["chosen_score"] for pair in kept) if kept else 0.0,
            "labeler/rejected_mean": fmean(pair["rejected_score"] for pair in kept) if kept else 0.0,
        }
        validation = [pair for pair in pairs[: self.num_validation_prompts] if pair is not None]
        train = [pair for pair in pairs[self.num_validation_prompts :] if pair is not None]
        return datasets.DatasetDict(train=datasets.Dataset.from_list(train), validation=datasets.Dataset.from_list(validation)), {
            "train": f"{self.samples} (train prompts)", "validation": f"{self.samples} (validation prompts)",
        }
