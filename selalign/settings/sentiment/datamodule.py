"""``data=sentiment``: on-policy preference pairs for sentiment-controlled generation on Rotten Tomatoes prompts."""

from __future__ import annotations

from statistics import fmean

import datasets

from selalign.data.datamodule import PreferenceDataModule
from selalign.settings.sentiment.corpus import review_prompts
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.sentiment.pairs import SamplingSettings, preference_pair, sampled_rows


class SentimentDataModule(PreferenceDataModule):
    """Pairs of answers of ``sampling_model`` to the ``train_prompts`` prompts, ranked by VADER.

    The first ``num_validation_prompts`` prompts (of ``selalign.settings.sentiment.corpus.review_prompts``, order seeded by
    ``prompt_seed``) give the validation pairs, the next ``num_train_prompts`` the train pairs; prompts whose
    samples' VADER scores differ by less than ``min_gap`` give none. Sampling (``selalign.settings.sentiment.pairs``) runs
    once per setting and is cached in ``cache_dir``. Other keyword arguments go to ``PreferenceDataModule``.
    ``stats`` gains the number of prompts, the pairs dropped for a small gap and the mean VADER score of
    the samples, the chosen and the rejected answers (train and validation together).
    """

    def __init__(
        self,
        sampling_model: str,
        cache_dir: str,
        num_train_prompts: int = 160,
        num_validation_prompts: int = 32,
        samples_per_prompt: int = 4,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        sampling_seed: int = 0,
        sampling_batch_size: int = 32,
        min_gap: float = 0.3,
        openings_per_movie: int = 3,
        opening_words: int = 6,
        prompt_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_train_prompts < 1 or num_validation_prompts < 1:
            raise ValueError(f"need at least one train and one validation prompt, got {num_train_prompts} and {num_validation_prompts}")
        self.sampling_model, self.cache_dir = sampling_model, cache_dir
        self.num_train_prompts, self.num_validation_prompts = num_train_prompts, num_validation_prompts
        self.sampling = SamplingSettings(samples_per_prompt, max_new_tokens, temperature, sampling_seed, sampling_batch_size)
        self.min_gap = min_gap
        self.prompt_options = {"openings_per_movie": openings_per_movie, "opening_words": opening_words, "seed": prompt_seed}

    def prompts(self) -> list[str]:
        """Validation prompts, then train prompts."""
        pool = review_prompts("train_prompts", **self.prompt_options)
        wanted = self.num_validation_prompts + self.num_train_prompts
        if wanted > len(pool):
            raise ValueError(f"data asks for {wanted} prompts but the train_prompts movies give {len(pool)}; lower data.num_train_prompts or raise data.openings_per_movie")
        return pool[:wanted]

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, str]]:
        rows = sampled_rows(self.sampling_model, self.prompts(), self.sampling, VaderLabeler(), self.cache_dir)
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
        source = f"sentiment pairs sampled from {self.sampling_model}"
        return datasets.DatasetDict(train=datasets.Dataset.from_list(train), validation=datasets.Dataset.from_list(validation)), {
            "train": f"{source} (train prompts)", "validation": f"{source} (validation prompts)",
        }
