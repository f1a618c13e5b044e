"""The implicit-reward scorer (SePO-style token rewards of a small aligned pair): its scores, its selection, and its
frozen models' log-probs cached with ref_cache=true."""

from __future__ import annotations

import logging

import pytest
import torch

from selalign.module import frozen_roles
from selalign.objectives import ObjectiveInputs, SelectiveDPO, TISDPO, TokenEvidence, select_tokens
from selalign.scoring import ImplicitReward
from selalign.train import train

from support.configs import compose_train, tiny_overrides
from support.tiny import build_model

SELECTOR = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
BASE = torch.tensor([[-1.5, -1.0, -2.5, -3.0]])


def evidence(chosen: bool, policy: torch.Tensor | None = None, base: torch.Tensor | None = BASE) -> TokenEvidence:
    policy = torch.tensor([[-2.0, -2.0, -2.0, -2.0]]) if policy is None else policy
    return TokenEvidence(chosen=chosen, policy=policy, mask=torch.ones(1, 4, dtype=torch.bool), selector=SELECTOR, selector_base=base)


def test_scores_are_the_selector_minus_its_base_on_chosen_and_the_negative_on_rejected():
    assert ImplicitReward()(evidence(True)).tolist() == [[0.5, -1.0, 2.0, 0.0]]
    assert ImplicitReward()(evidence(False)).tolist() == [[-0.5, 1.0, -2.0, 0.0]]
    # The policy plays no part.
    assert ImplicitReward()(evidence(True, policy=torch.tensor([[-9.0, 0.0, -0.1, -4.0]]))).tolist() == [[0.5, -1.0, 2.0, 0.0]]


def test_selection_keeps_the_highest_reward_chosen_and_the_lowest_reward_rejected_tokens():
    policy = torch.full((2, 4), -2.0)
    inputs = ObjectiveInputs(
        policy_logps=policy, response_mask=torch.ones(2, 4, dtype=torch.bool), ref_logps=policy,
        selector_logps=torch.cat([SELECTOR, SELECTOR]), selector_base_logps=torch.cat([BASE, BASE]),
    )
    scores, selected = select_tokens(inputs, ImplicitReward(), ratio=0.25)
    # Rewards [0.5, -1, 2, 0]: chosen keeps token 2 (reward 2), rejected keeps token 1 (reward -1).
    assert selected.tolist() == [[False, False, True, False], [False, True, False, False]]
    assert torch.equal(scores[1], -scores[0])


def test_a_missing_base_model_is_named():
    with pytest.raises(ValueError, match="scorer=implicit_reward reads the selector's starting model: set selector_base_model="):
        ImplicitReward()(evidence(True, base=None))


@pytest.mark.parametrize("objective", [SelectiveDPO(scorer=ImplicitReward()), TISDPO(scorer=ImplicitReward())])
def test_the_selector_and_its_base_run_on_every_row(objective):
    assert ImplicitReward.needs == {"selector", "selector_base"}
    assert frozen_roles(objective, has_selector=True) == {"reference": "all", "selector": "all", "selector_base": "all"}
    # Without a selector model the reference selects, against the base.
    assert frozen_roles(objective, has_selector=False) == {"reference": "all", "selector_base": "all"}


@pytest.fixture(scope="module")
def tiny_selector(tmp_path_factory, tiny_lm):
    """A third tiny model with the same tokenizer: the selector, apart from the reference (tiny_ref) and its base (tiny_lm)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_selector")
    build_model(out, AutoTokenizer.from_pretrained(tiny_lm), seed=2)
    return out


@pytest.mark.parametrize("separate_selector", [False, True])
def test_cached_log_probs_give_the_live_runs_first_losses(separate_selector, tiny_lm, tiny_ref, tiny_selector, pairs_file, tmp_path, caplog):
    """The base is the policy's start (tiny_lm); the selector is tiny_selector, or the reference (tiny_ref) when none is set."""
    selector = ["selector_model=hub", f"selector_model.name_or_path={tiny_selector}"] if separate_selector else []
    overrides = [
        *tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "method=selective_dpo", "scorer=implicit_reward", *selector,
        "selector_base_model=hub", f"selector_base_model.name_or_path={tiny_lm}",
        "logger=none", "callbacks=none", "trainer.max_steps=1", f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    live = train(compose_train(*overrides, output_dir=tmp_path / "live"))
    with caplog.at_level(logging.INFO, logger="selalign.refcache"):
        cached = train(compose_train(*overrides, "ref_cache=true", output_dir=tmp_path / "cached"))
    # One cache file per frozen model: the reference, the selector when set apart, and the selector's base.
    models = [tiny_ref, tiny_lm, *([tiny_selector] if separate_selector else [])]
    assert len(list((tmp_path / "cache" / "logps").glob("*.pt"))) == len(models)
    computed = [record.getMessage() for record in caplog.records if record.getMessage().startswith("computing the ")]
    assert sorted(message.split()[2] for message in computed) == sorted(["reference", "selector_base", *(["selector"] if separate_selector else [])])
    for name in ("train/loss", "train/selection/score_kept", "val/loss", "val/selection/kept_chosen", "val/rewards/margins"):
        assert cached[name] == pytest.approx(live[name], abs=1e-5), name
