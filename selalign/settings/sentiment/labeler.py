"""The labeling judge: VADER's compound sentiment score, which ranks sampled answers into preference pairs.

VADER (Hutto and Gilbert 2014) is a hand-made lexicon with rules for negation, intensifiers and punctuation;
its compound score lies in [-1, 1] (-1 most negative). It is cheap and deterministic, and deliberately not the
evaluation judge (``selalign.settings.sentiment.classifier``), so that a policy that only learned VADER's lexicon does
not look better than it is.
"""

from __future__ import annotations

from collections.abc import Sequence

VADER_REQUIREMENT = "vadersentiment==3.3.2"


class VaderLabeler:
    """``score(texts)``: VADER compound score of each text, in [-1, 1]."""

    identity = {"labeler": "vader", "requirement": VADER_REQUIREMENT}

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as error:
            raise ImportError(f"the VADER labeler needs its lexicon package: pip install --no-deps {VADER_REQUIREMENT}") from error
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(text)["compound"]) for text in texts]
