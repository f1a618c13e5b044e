"""Cached per-token log-probs of a frozen model (the reference, the selector): one pass before training, none during it.

The cache file holds, for every pair (train and validation, by ``index``), the model's log-probs of the
chosen and rejected response tokens. Its key hashes the model's identity (path, revision, dtype, and for a
local folder the names, sizes and modification times of its files), the precision it is computed in and the
tokenized pairs themselves, which covers the data, the tokenizer and every truncation setting. A cache whose key
or shapes do not match, or that cannot be read, is rebuilt with a message, never used.

A training run builds a missing cache with ``LogpsCacheBuilder`` at fit start: on the run's accelerator, in its
precision, with the frozen model placed (and sharded) by the run's strategy, in length-sorted batches, every
process computing its share of the pairs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from rich.progress import track

from selalign.data import PreferenceCollator
from selalign.data.datamodule import PreferenceDataModule
from selalign.data.sampler import pair_lengths
from selalign.logprobs import token_logps
from selalign.models import freeze
from selalign.store import atomic_path, model_identity

log = logging.getLogger(__name__)

FORMAT_VERSION = 2


def cache_key(model_cfg: DictConfig, datamodule: PreferenceDataModule, precision: str = "32-true") -> str:
    identity = {"format": FORMAT_VERSION, "model": model_identity(model_cfg), "precision": str(precision)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for record in datamodule.records():
        digest.update(json.dumps([record["index"], record["prompt_ids"], record["chosen_ids"], record["rejected_ids"]]).encode())
    return digest.hexdigest()[:32]


def cache_file(model_cfg: DictConfig, datamodule: PreferenceDataModule, cache_dir: str, precision: str = "32-true") -> tuple[Path, str]:
    """(the cache file of ``model_cfg``'s log-probs on the datamodule's pairs at ``precision``, its key)."""
    key = cache_key(model_cfg, datamodule, precision)
    return Path(cache_dir).expanduser() / "logps" / f"{key}.pt", key


def length_sorted_batches(datamodule: PreferenceDataModule, batch_size: int) -> list[list[dict]]:
    """Every pair of both splits in batches of ``batch_size``, longest first: little padding, and a batch that does not
    fit in memory fails at once."""
    records = datamodule.records()
    order = sorted(range(len(records)), key=lambda i: -pair_lengths([records[i]])[0])
    return [[records[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def compute_logps(model, datamodule: PreferenceDataModule, batch_size: int, device: torch.device, vocab_size: int | None = None,
                  forward_context=contextlib.nullcontext) -> tuple[list, list]:
    """(chosen, rejected) lists indexed by pair ``index``: the model's log-probs of each response's tokens, computed
    in this process (``compute_share`` of a single process)."""
    logps = compute_share(model, datamodule, batch_size, device, vocab_size, forward_context)
    return [logps[i][0] for i in range(len(logps))], [logps[i][1] for i in range(len(logps))]


def compute_share(model, datamodule: PreferenceDataModule, batch_size: int, device: torch.device, vocab_size: int | None = None,
                  forward_context=contextlib.nullcontext, rank: int = 0, world_size: int = 1) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{pair index: (chosen, rejected)}, the model's log-probs of each response's tokens (float32, on the CPU), for
    this process's share of the length-sorted batches (batch ``rank``, ``rank + world_size``, ...).

    Every process runs as many forwards (the last ones repeat a batch when the shares differ), as sharded models need.
    The model is read where it is; batches go to ``device``; ``forward_context`` sets the precision (autocast).
    """
    collate = PreferenceCollator(datamodule.tokenizer.pad_token_id, getattr(datamodule, "pad_to_multiple_of", 1))
    batches = length_sorted_batches(datamodule, batch_size)
    steps = -(-len(batches) // world_size)
    mine = [batches[min(rank + step * world_size, len(batches) - 1)] for step in range(steps)]
    result: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for step, pairs in enumerate(track(mine, description="log-probs of the frozen model", disable=rank != 0)):
            batch = move(collate(pairs), device)
            with forward_context():
                logps = token_logps(model, batch, vocab_size=vocab_size).logps.float().cpu()
            if rank + step * world_size >= len(batches):
                continue  # a repeated batch, run only to keep the processes in step
            mask = batch["response_mask"].cpu()
            per_row = torch.split(logps[mask], mask.sum(dim=1).tolist())
            for i, index in enumerate(batch["pair_index"].tolist()):
                result[index] = (per_row[i].clone(), per_row[len(pairs) + i].clone())
    return result


def move(batch: dict, device: torch.device) -> dict:
    """``batch`` with its tensors (also those of nested dicts) on ``device``."""
    return {k: move(v, device) if isinstance(v, dict) else v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def save_cache(path: Path, key: str, logps: dict[int, tuple[torch.Tensor, torch.Tensor]], datamodule: PreferenceDataModule) -> tuple[list, list]:
    chosen = [logps[record["index"]][0] for record in datamodule.records()]
    rejected = [logps[record["index"]][1] for record in datamodule.records()]
    with atomic_path(path) as temporary:
        torch.save({"key": key, "chosen": chosen, "rejected": rejected}, temporary)
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


def precision_context(precision: str, device: torch.device):
    """(context, weights dtype or None) of a Lightning precision string, for a model run outside a Trainer."""
    if precision in ("bf16-mixed", "16-mixed"):
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        return (lambda: torch.autocast(device.type, dtype=dtype)), None
    dtypes = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "32-true": None, "32": None, "64-true": torch.float64}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r} for the log-prob cache")
    return contextlib.nullcontext, dtypes[precision]


def cached_logps(model_cfg: DictConfig, load_model, datamodule: PreferenceDataModule, cache_dir: str, batch_size: int,
                 device: str = "cpu", precision: str = "32-true") -> tuple[list, list, Path]:
    """Load the log-probs of every pair under the model of ``model_cfg`` from ``cache_dir``, computing and saving them
    in this process if needed (on ``device``, at ``precision``); a training run builds them with ``LogpsCacheBuilder``.

    ``load_model`` is called (and the model dropped afterwards) only when the cache must be built.
    Returns (chosen, rejected, cache file).
    """
    path, key = cache_file(model_cfg, datamodule, cache_dir, precision)
    cached = load_cache(path, key, datamodule)
    if cached is not None:
        log.info("log-probs of %s read from cache %s", model_cfg.name_or_path, path)
        return (*cached, path)
    log.info("computing the log-probs of %s on %d pairs into %s", model_cfg.name_or_path, len(datamodule.records()), path)
    device = torch.device(device)
    context, dtype = precision_context(precision, device)
    model = freeze(load_model()).to(device=device, dtype=dtype)
    logps = compute_share(model, datamodule, batch_size, device, len(datamodule.tokenizer), context)
    return (*save_cache(path, key, logps, datamodule), path)


class LogpsCacheBuilder(L.Callback):
    """Builds missing log-prob caches of frozen roles when a run starts, then lets the run read them.

    ``caches``: role -> (cache file, key) of each cache to build (``cache_file``). At fit (or validation) start, with
    the frozen model where the strategy put it (on the accelerator, sharded under FSDP or DeepSpeed) and at the run's
    precision, every process computes its share of the length-sorted batches (``compute_share``) and writes it next to
    the cache file; the first process joins the shares into the cache file; every process then attaches the cached
    log-probs to the datamodule's pairs (batches carry them from then on) and the module drops the frozen model unless
    the objective still runs it (``PreferenceModule.release_frozen``).
    """

    def __init__(self, caches: dict[str, tuple[Path, str]], batch_size: int):
        self.caches, self.batch_size = caches, batch_size
        self.done = False

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.build(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self.build(trainer, pl_module)

    def build(self, trainer: L.Trainer, pl_module) -> None:
        if self.done:
            return
        datamodule, strategy = trainer.datamodule, trainer.strategy
        rank, world_size = trainer.global_rank, trainer.world_size
        for role, (path, key) in self.caches.items():
            log.info("computing the %s log-probs of %d pairs on %s (%s), into %s", role, len(datamodule.records()), pl_module.device, trainer.precision, path)
            logps = compute_share(getattr(pl_module, role), datamodule, self.batch_size, pl_module.device, pl_module.vocab_size,
                                  trainer.precision_plugin.forward_context, rank, world_size)
            share = path.with_name(f"{path.stem}.share{rank}of{world_size}.pt")
            with atomic_path(share) as temporary:
                torch.save(logps, temporary)
            strategy.barrier("logps_cache_shares")
            if rank == 0:
                joined = {}
                for other in range(world_size):
                    part = path.with_name(f"{path.stem}.share{other}of{world_size}.pt")
                    joined |= torch.load(part, weights_only=True)
                save_cache(path, key, joined, datamodule)
                for other in range(world_size):
                    path.with_name(f"{path.stem}.share{other}of{world_size}.pt").unlink()
            strategy.barrier("logps_cache_joined")
            cached = load_cache(path, key, datamodule)
            if cached is None:
                raise RuntimeError(f"the log-prob cache {path} written by the first process cannot be read here; put paths.cache_dir on a filesystem every process shares")
            datamodule.attach_cached_logps(role, *cached)
        pl_module.release_frozen(list(self.caches))
        self.done = True
