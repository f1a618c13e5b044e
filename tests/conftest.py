"""Shared fixtures: tiny tokenizers and causal LMs saved as Hugging Face folders, tiny preference files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selalign.world import GoldJudge, World, WorldConfig, train_world_tokenizer
import selalign.resolvers  # noqa: F401  the config resolvers, as the entry points register them
from selalign.world.resolver import world_model_path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow"]


def toy_pairs(n: int) -> list[dict]:
    """Deterministic pairs: the chosen response names the animal's colour from a fixed table, the rejected another."""
    rows = []
    for i in range(n):
        animal = ANIMALS[i % len(ANIMALS)]
        right = COLORS[i % len(COLORS)]
        wrong = COLORS[(i + 3) % len(COLORS)]
        rows.append({
            "id": f"toy-{i}",
            "prompt": f"What colour is the {animal} number {i % 7}?",
            "chosen": f"Well, the {animal} is {right}. Thanks for asking.",
            "rejected": f"Hello! The {animal} is {wrong}, I think.",
        })
    return rows


def build_tokenizer(out_dir: Path, extra_text: str = "", with_chat_template: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_pairs(64)] + ["User: Assistant: System:", extra_text]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    if with_chat_template:
        fast.chat_template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
    fast.save_pretrained(out_dir)
    return fast


def build_model(out_dir: Path, tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compose_train(*overrides: str, output_dir: Path):
    """The real training config, composed as the CLI would, with this run's output dir set."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def tiny_overrides(tiny_lm: Path, tiny_ref: Path, pairs_file: Path, root: Path) -> list[str]:
    """Overrides that shrink the default job to tiny models, a tiny file and two steps."""
    return [
        "model=hub", f"model.name_or_path={tiny_lm}", "ref_model=hub", f"ref_model.name_or_path={tiny_ref}",
        "data=files", f"data.path={pairs_file}", "data.validation_fraction=0.2", "data.batch_size=4",
        "benchmark=none", "logger=csv", "trainer.max_steps=2", f"paths.root_dir={root}",
    ]


# The offline world (tests/world): a seed-7 world, its gold judge and tokenizer, and its tiny-scale model ladder.


@pytest.fixture(scope="session")
def world():
    return World(WorldConfig(seed=7))


@pytest.fixture(scope="session")
def judge(world):
    return GoldJudge(world)


@pytest.fixture(scope="session")
def world_tokenizer(world):
    return train_world_tokenizer(world)


@pytest.fixture(scope="session")
def ladder_cache(tmp_path_factory):
    """The cache root holding the tiny ladder of the seed-7 world (built by ``tiny_ladder``)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_ladder(ladder_cache):
    """The tiny-scale ladder of the seed-7 world, built on first use through the config resolver; its folder."""
    return Path(world_model_path("world_small", 7, "tiny", str(ladder_cache))).parent
