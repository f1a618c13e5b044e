"""Cached per-token log-probs of a frozen model (the reference, the selector): one pass before training, none during it.

The cache file holds, for every pair (train and validation, by ``index``), the model's log-probs of the
chosen and rejected response tokens. Its key hashes the model's identity (path, revision, dtype, and for a
local folder the names, sizes and modification times of its files) and the tokenized pairs themselves, which
covers the data, the tokenizer and every truncation setting. A cache whose key or shapes do not match, or that
cannot be read, is rebuilt with a message, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from selalign.data import PreferenceCollator
from selalign.data.datamodule import PreferenceDataModule
from selalign.logprobs import model_label_logprobs
from selalign.models import freeze
from selalign.store import atomic_path, model_identity

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def cache_key(model_cfg: DictConfig, datamodule: PreferenceDataModule) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "model": model_identity(model_cfg)}, sort_keys=True).encode())
    for record in datamodule.records():
        digest.update(json.dumps([record["index"], record["prompt_ids"], record["chosen_ids"], record["rejected_ids"]]).encode())
    return digest.hexdigest()[:32]


def compute_logps(model: torch.nn.Module, datamodule: PreferenceDataModule, batch_size: int, device: torch.device) -> tuple[list, list]:
    """(chosen, rejected) lists indexed by pair ``index``: the model's log-probs of each response's tokens."""
    records = datamodule.records()
    collate = PreferenceCollator(datamodule.tokenizer.pad_token_id)
    chosen: list = [None] * len(records)
    rejected: list = [None] * len(records)
    model = freeze(model).to(device)
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            batch = collate(records[start : start + batch_size])
            logps = model_label_logprobs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu()
            mask = batch["response_mask"]
            per_row = torch.split(logps[mask], mask.sum(dim=1).tolist())
            pairs = len(batch["pair_index"])
            for i, index in enumerate(batch["pair_index"].tolist()):
                chosen[index], rejected[index] = per_row[i].clone(), per_row[pairs + i].clone()
    return chosen, rejected


def load_cache(path: Path, key: str, datamodule: PreferenceDataModule) -> tuple[list, list] | None:
    """The cached lists if ``path`` holds a readable cache for ``key`` whose shapes fit the pairs; None otherwise."""
    if not path.exists():
        return None
    try:
        content = torch.load(path, weights_only=True)
    except Exception as error:  # a truncated or foreign file: rebuild
        log.warning("log-prob cache %s is unreadable (%s); rebuilding it", path, error)
        return None
    if content.get("key") != key:
        log.warning("log-prob cache %s was built for other data or another model; rebuilding it", path)
        return None
    chosen, rejected = content["chosen"], content["rejected"]
    records = datamodule.records()
    fits = len(chosen) == len(rejected) == len(records) and all(
        len(chosen[r["index"]]) == len(r["chosen_ids"]) and len(rejected[r["index"]]) == len(r["rejected_ids"]) for r in records
    )
    if not fits:
        log.warning("log-prob cache %s does not match the pairs' token counts; rebuilding it", path)
        return None
    return chosen, rejected


def cached_logps(model_cfg: DictConfig, load_model, datamodule: PreferenceDataModule, cache_dir: str, batch_size: int, device: str = "cpu") -> tuple[list, list, Path]:
    """Load the log-probs of every pair under the model of ``model_cfg`` from ``cache_dir``, computing and saving them if needed.

    ``load_model`` is called (and the model dropped afterwards) only when the cache must be built.
    Returns (chosen, rejected, cache file).
    """
    key = cache_key(model_cfg, datamodule)
    path = Path(cache_dir).expanduser() / "logps" / f"{key}.pt"
    cached = load_cache(path, key, datamodule)
    if cached is not None:
        log.info("log-probs of %s read from cache %s", model_cfg.name_or_path, path)
        return (*cached, path)
    log.info("computing the log-probs of %s on %d pairs into %s", model_cfg.name_or_path, len(datamodule.records()), path)
    chosen, rejected = compute_logps(load_model(), datamodule, batch_size, torch.device(device))
    with atomic_path(path) as temporary:
        torch.save({"key": key, "chosen": chosen, "rejected": rejected}, temporary)
    return chosen, rejected, path
