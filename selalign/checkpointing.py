"""Resuming: random states in checkpoints, and finding the checkpoint of an earlier run of the same config."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from selalign.store import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, flushed to disk, then renamed over it.

    A rename within one directory is atomic, so a kill at any moment leaves either the previous checkpoint or the
    new one, never a truncated file (a temporary file elsewhere, then a move, can cross filesystems and copy).
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)

class RestoreDataPosition(L.Callback):
    """Gives the train loader its saved position when Lightning resumes a run without doing so itself.

    Lightning loads a stateful train loader's ``state_dict`` from the checkpoint only when it builds the loader after
    restoring the checkpoint. A scheduler that asks ``trainer.estimated_stepping_batches`` in ``configure_optimizers``
    makes Lightning build the loader earlier, during setup, whenever an epoch limit is set (``max_epochs=-1`` needs no
    loader for the estimate); the saved position then stays unused and the resumed run starts its epoch again from
    the first batch. At train start, after the restore, this loads the states still waiting and restarts the
    fetcher's iterator, which is what Lightning's restore does when it builds the loader late.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if loop.restarting and loop._combined_loader_states_to_load:
            loop._load_combined_loader_states()
            iter(loop._data_fetcher)


def rng_states() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def comparable_config(cfg: DictConfig) -> dict:
    """The resolved config with this run's own directory abstracted away and ``resume`` dropped.

    Paths derived from the run directory (checkpoints, logger dirs) differ between a run and its restart.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    run_dir = str(container["paths"].pop("output_dir"))
    container.pop("resume", None)

    def abstract(node):
        if isinstance(node, dict):
            return {key: abstract(value) for key, value in node.items()}
        if isinstance(node, list):
            return [abstract(value) for value in node]
        return node.replace(run_dir, "<run_dir>") if isinstance(node, str) else node

    return abstract(container)


def find_resume_checkpoint(cfg: DictConfig, root_dir: str | Path, current_run_dir: str | Path) -> Path | None:
    """``last.ckpt`` of the newest earlier run under ``root_dir`` whose config equals ``cfg`` (volatile keys aside)."""
    wanted = comparable_config(cfg)
    candidates = []
    for config_file in Path(root_dir).rglob("config.yaml"):
        run_dir = config_file.parent
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        if run_dir.resolve() == Path(current_run_dir).resolve() or not checkpoint.exists():
            continue
        if comparable_config(OmegaConf.load(config_file)) == wanted:
            candidates.append(checkpoint)
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)
