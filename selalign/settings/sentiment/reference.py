"""``ref_model=smollm2_135m_dpo``: a same-size reference, the starting model after DPO on the sentiment pairs.

``${smollm2_sentiment_dpo:<cache dir>,${data}}`` resolves to ``<cache dir>/sentiment/dpo_reference-<key>``, a
``save_pretrained`` folder (model and tokenizer) built on first use by ``train_dpo_reference``: DPO of
``data.sampling_model`` against a frozen copy of itself on the pairs of the ``data`` config (a
``SentimentDataModule``: the pairs are the run's own, sampled once), through the framework's ``PreferenceModule``
and ``selalign.objectives.DPO`` under a Lightning ``Trainer``, with LoRA adapters merged into the weights before
saving. The key hashes the data settings that make the pairs, the starting model's identity and the
``DPOReferenceRecipe``. ``build_info.json`` in the folder records the recipe, the steps, the wall time and the
final validation metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import get_scheduler

from selalign.models import load_causal_lm, load_tokenizer
from selalign.module import PreferenceModule
from selalign.objectives import DPO
from selalign.settings.sentiment.datamodule import SentimentDataModule
from selalign.settings.sentiment.lora import with_lora
from selalign.store import build_once, content_key, model_identity

RESOLVER = "smollm2_sentiment_dpo"
DATAMODULE_TARGET = "selalign.settings.sentiment.SentimentDataModule"
# Data keys that do not change the pairs (seed orders the batches of a run); the recipe sets its own batch size and seed.
BATCHING_KEYS = ("_target_", "seed", "batch_size", "eval_batch_size", "num_workers", "pad_to_multiple_of", "on_invalid")


@dataclass(frozen=True)
class DPOReferenceRecipe:
    """How the reference is trained: ``epochs`` over the train pairs, ``batch_size`` pairs per step, AdamW at ``lr``
    (linear decay to zero), DPO at ``beta``, LoRA adapters of rank ``lora_rank`` (0: every weight), seed ``seed``."""

    epochs: int = 1
    batch_size: int = 8
    lr: float = 5e-4
    beta: float = 0.1
    lora_rank: int = 16
    seed: int = 0


def train_dpo_reference(data: dict, recipe: DPOReferenceRecipe, out_dir: Path) -> None:
    """DPO of ``data["sampling_model"]`` on the pairs of the ``SentimentDataModule`` settings ``data``, saved into ``out_dir``."""
    start = data["sampling_model"]
    tokenizer = load_tokenizer(start)
    settings = {key: value for key, value in data.items() if key not in BATCHING_KEYS}
    datamodule = SentimentDataModule(**settings, tokenizer=tokenizer, batch_size=recipe.batch_size)
    datamodule.setup("fit")
    started = time.perf_counter()
    policy = load_causal_lm(start)
    if recipe.lora_rank:
        policy = with_lora(policy, r=recipe.lora_rank, alpha=2.0 * recipe.lora_rank)
    module = PreferenceModule(
        policy, load_causal_lm(start), DPO(beta=recipe.beta),
        functools.partial(torch.optim.AdamW, lr=recipe.lr, weight_decay=0.0),
        functools.partial(get_scheduler, "linear", num_warmup_steps=0),
        vocab_size=len(tokenizer),
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=recipe.epochs, gradient_clip_val=1.0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        trainer.fit(module, datamodule=datamodule)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
    model = policy.merge_and_unload() if recipe.lora_rank else policy
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build_info.json").write_text(json.dumps({
        "start": start, "recipe": dataclasses.asdict(recipe), "steps": trainer.global_step, "train_pairs": len(datamodule.splits["train"]),
        "seconds": round(time.perf_counter() - started, 1), "metrics": metrics,
    }, indent=2) + "\n")


def dpo_reference_path(cache_dir: str, data_cfg: DictConfig, recipe: DPOReferenceRecipe = DPOReferenceRecipe()) -> str:
    """The reference folder for the sentiment data config ``data_cfg``, built on first use (see the module docstring)."""
    data = OmegaConf.to_container(data_cfg, resolve=True)
    if data.get("_target_") != DATAMODULE_TARGET:
        raise ValueError(f"ref_model=smollm2_135m_dpo is trained on the sentiment pairs: use it with data=sentiment (got data target {data.get('_target_')!r})")
    start_identity = model_identity(data["sampling_model"])
    pairs = {key: value for key, value in data.items() if key not in BATCHING_KEYS}
    key = content_key({"pairs": pairs, "start": start_identity, "recipe": dataclasses.asdict(recipe)})
    target = Path(cache_dir).expanduser() / "sentiment" / f"dpo_reference-{key[:16]}"
    what = f"the DPO-tuned reference (DPO of {data['sampling_model']} on its sentiment pairs, {recipe})"
    return str(build_once(target, lambda out, _: train_dpo_reference(data, recipe, out), what))


def register_reference_resolver() -> None:
    """Register ``${smollm2_sentiment_dpo:<cache dir>,<data config>}`` (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, dpo_reference_path)
