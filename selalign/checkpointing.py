"""Resuming: checkpoints for it, random and data states in them, and finding the earlier run of the same config."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
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

class ResumeCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps: what ``resume=auto`` continues from.

    It holds what resuming needs: policy weights, optimizer and scheduler states, random states and the data
    position. Unlike ``ModelCheckpoint(save_last=True)``, nothing is written when training ends: a run shorter
    than the interval writes no checkpoint at all, and the trained weights of a finished run are its ``policy/``
    folder. ``selalign.train`` deletes the checkpoint of a finished run unless ``checkpoint.keep`` is set.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int):
        if every_n_train_steps < 1:
            raise ValueError(f"checkpoint.every_n_steps must be >= 1, got {every_n_train_steps}")
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


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


class RunAlreadyComplete(Exception):
    """``resume=auto`` found that the newest earlier run of this config finished: there is nothing to resume."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(
            f"resume=auto: the earlier run of this config in {run_dir} is complete: nothing to resume, nothing trained. "
            f"Its results: {run_dir / 'metrics.json'} and the trained policy {run_dir / 'policy'}. "
            "To train this config again, run it without resume=auto."
        )


def find_resume_checkpoint(cfg: DictConfig, root_dir: str | Path, current_run_dir: str | Path) -> Path | None:
    """``last.ckpt`` of the newest earlier run under ``root_dir`` whose config equals ``cfg`` (volatile keys aside).

    Runs that wrote neither a checkpoint nor ``metrics.json`` are not considered. Raises ``RunAlreadyComplete``
    when the newest one finished (it has ``metrics.json``); None when there is none.
    """
    wanted = comparable_config(cfg)
    candidates = []
    for config_file in Path(root_dir).rglob("config.yaml"):
        run_dir = config_file.parent
        if run_dir.resolve() == Path(current_run_dir).resolve():
            continue
        if not ((run_dir / "metrics.json").exists() or (run_dir / "checkpoints" / "last.ckpt").exists()):
            continue
        if comparable_config(OmegaConf.load(config_file)) == wanted:
            candidates.append(run_dir)
    newest = max(candidates, key=lambda run_dir: (run_dir / "config.yaml").stat().st_mtime, default=None)
    if newest is None:
        return None
    if (newest / "metrics.json").exists():
        raise RunAlreadyComplete(newest)
    return newest / "checkpoints" / "last.ckpt"
