"""Sentiment-controlled generation with a real small language model, offline.

SmolLM2-135M-Instruct (``selalign.settings.sentiment.smollm2``) answers review prompts built from Rotten Tomatoes critic snippets
(``corpus``); preference pairs are its own sampled answers ranked by VADER, the labeling judge (``labeler``,
``pairs``, ``datamodule``); a MiniLM sentiment classifier fitted on fresh/rotten snippets is the separate
evaluation judge (``classifier``, ``benchmark``); a DPO-tuned copy of the starting model is the stronger
reference (``reference``); ``lora`` trains low-rank adapters instead of every weight.

Their config resolvers ``${smollm2:...}`` and ``${smollm2_sentiment_dpo:...}`` are registered by ``selalign.resolvers``.
"""

from selalign.settings.sentiment.benchmark import SentimentGold
from selalign.settings.sentiment.classifier import SentimentClassifier
from selalign.settings.sentiment.datamodule import SentimentDataModule
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.sentiment.reference import DPOReferenceRecipe, dpo_reference_path

__all__ = ["DPOReferenceRecipe", "SentimentClassifier", "SentimentDataModule", "SentimentGold", "VaderLabeler", "dpo_reference_path"]
