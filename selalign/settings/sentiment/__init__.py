"""``setting=sentiment``: sentiment-controlled generation with a real small language model, offline.

SmolLM2-135M-Instruct (``smollm2``) answers review prompts built from Rotten Tomatoes critic snippets (``corpus``);
preference pairs are its own sampled answers ranked by VADER, the labeler (``labeler``, ``pairs``, ``datamodule``); a
MiniLM sentiment classifier fitted on fresh/rotten snippets is the gold scorer (``classifier``); a DPO-tuned copy of the
starting model is the aligned reference; ``lora`` trains low-rank adapters instead of every weight. ``setting`` ties
them together and builds each once.
"""

from selalign.settings.sentiment.classifier import SentimentClassifier
from selalign.settings.sentiment.datamodule import SentimentDataModule
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.sentiment.setting import SentimentScorer, SentimentSetting

__all__ = ["SentimentClassifier", "SentimentDataModule", "SentimentScorer", "SentimentSetting", "VaderLabeler"]
