"""Shared fixtures: tiny tokenizers and causal LMs saved as Hugging Face folders, tiny preference files."""

from __future__ import annotations

import json
import os
from pathlib import Path


# One thread per test process and per subprocess it starts: the models are tiny (threads cost more than they give) and
# the 2-core machines the suite runs on are shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from support.tiny import build_model, build_tokenizer, toy_pairs

import selalign.resolvers  # noqa: F401  the config resolver, as the entry points register it
from selalign.settings.world import World, WorldConfig, WorldScorer, train_world_tokenizer
from support.configs import compose_train

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny random Llama with a BPE tokenizer (no chat template), saved as a Hugging Face folder."""
    out = tmp_path_factory.mktemp("tiny_lm")
    build_model(out, build_tokenizer(out))
    return out


@pytest.fixture(scope="session")
def tiny_ref(tmp_path_factory, tiny_lm) -> Path:
    """A second tiny model with the same tokenizer and other weights."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_ref")
    build_model(out, AutoTokenizer.from_pretrained(tiny_lm), seed=1)
    return out


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_pairs(40)))
    return path


# The offline world (tests/settings/world): a seed-7 world, its gold scorer and tokenizer, and its tiny-recipe ladder.


@pytest.fixture(scope="session")
def world():
    return World(WorldConfig(seed=7))


@pytest.fixture(scope="session")
def scorer(world):
    return WorldScorer(world)


@pytest.fixture(scope="session")
def world_tokenizer(world):
    return train_world_tokenizer(world)


@pytest.fixture(scope="session")
def ladder_cache(tmp_path_factory):
    """The cache root holding the tiny ladder of the seed-7 world (built by ``tiny_ladder``)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_world_setting(ladder_cache, tmp_path_factory):
    """``setting=world_tiny`` of the seed-7 world in ``ladder_cache``, as the config composes it (nothing built)."""
    import hydra

    cfg = compose_train("setting=world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", output_dir=tmp_path_factory.mktemp("run"))
    return hydra.utils.instantiate(cfg.setting, _convert_="all")


@pytest.fixture(scope="session")
def tiny_ladder(tiny_world_setting):
    """The tiny-recipe ladder of the seed-7 world, built by the setting's prepare step; its folder."""
    tiny_world_setting.prepare()
    return tiny_world_setting.ladder_dir()
