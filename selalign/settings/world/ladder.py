"""The world's ladder of models, built once per world and scale into the cache.

Three Llama-style models share one tokenizer (``train_world_tokenizer``), all trained from scratch on the world:

- ``world_small``: a small model pretrained on the world's corpus (every fact, all statements true), then
  fine-tuned on noisy demonstrations (``small_sft_noise`` of them state a wrong value): it knows many facts but
  often says something else, so a policy started from it has room to improve;
- ``world_small_dpo``: ``world_small`` after DPO on world preference pairs (the paper's same-size aligned reference);
- ``world_large_dpo``: a larger model pretrained longer, fine-tuned on cleaner demonstrations, then DPO'd the same
  way (the stronger reference).

Pretraining and SFT are a plain next-token loop (``selalign.settings.world.lm_training``); the DPO stages run the
framework's own ``PreferenceModule`` with ``selalign.objectives.DPO`` on a ``WorldDataModule`` under a Lightning
``Trainer``. Every weight is a function of the world and the scale's ``LadderRecipe`` only: each stage seeds its own
RNG from the world seed and the stage name, and the build runs on the CPU.

Layout: ``<cache_dir>/world/<WORLD_VERSION>-<fingerprint>-<scale>/`` holds ``tokenizer/``, one ``save_pretrained``
folder (model and tokenizer) per model, and ``manifest.json`` (world, recipe, per-stage steps and wall time, and
each model's gold accuracy and mean reward on held-out prompts, measured with ``WorldGold``'s default settings).
A ladder is built into a temporary folder and renamed into place; a lock file serialises builds of the same
ladder by parallel jobs, which then find it built.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from selalign.module import PreferenceModule
from selalign.objectives import DPO
from selalign.settings.world.benchmark import WorldGold
from selalign.settings.world.datamodule import WorldDataModule
from selalign.settings.world.generator import WORLD_VERSION, World
from selalign.settings.world.lm_training import Architecture, demonstration_row, document_row, new_causal_lm, pack_rows, train_next_token
from selalign.settings.world.tokenizer import train_world_tokenizer

LADDER_MODELS = ("world_small", "world_small_dpo", "world_large_dpo")
MANIFEST_FILE = "manifest.json"
# Longest row (prompt + response tokens) any ladder model is trained on or asked to continue.
MAX_POSITIONS = 128


@dataclass(frozen=True)
class LadderRecipe:
    """How each model of a ladder is trained: sizes, steps, rows (or pairs) per step, learning rates.

    A pretraining step takes ``pretrain_batch_size`` rows of ``MAX_POSITIONS`` tokens, each packed with several
    corpus documents (about 3.4 on average); an SFT step ``sft_batch_size`` demonstrations; a DPO step
    ``dpo_batch_size`` preference pairs. ``gold_prompts`` held-out prompts score each model for the manifest.
    """

    small: Architecture
    large: Architecture
    small_pretrain_steps: int
    large_pretrain_steps: int
    sft_steps: int
    dpo_steps: int
    small_sft_noise: float = 0.3
    large_sft_noise: float = 0.1
    pretrain_batch_size: int = 16
    sft_batch_size: int = 32
    dpo_batch_size: int = 16
    pretrain_lr: float = 2e-3
    sft_lr: float = 5e-4
    dpo_lr: float = 2e-5
    dpo_beta: float = 0.1
    gold_prompts: int = 436


LADDER_SCALES = {
    "full": LadderRecipe(
        small=Architecture(hidden_size=128, layers=4, heads=4), large=Architecture(hidden_size=192, layers=4, heads=6),
        small_pretrain_steps=500, large_pretrain_steps=600, sft_steps=150, dpo_steps=120,
    ),
    "tiny": LadderRecipe(
        small=Architecture(hidden_size=16, layers=1, heads=2), large=Architecture(hidden_size=32, layers=1, heads=2),
        small_pretrain_steps=4, large_pretrain_steps=6, sft_steps=3, dpo_steps=2,
        pretrain_batch_size=4, sft_batch_size=8, dpo_batch_size=4, gold_prompts=8,
    ),
}
# Corpus documents drawn per packed pretraining row: a little more than fit, so that no document repeats.
DOCUMENTS_PER_ROW = 4


def ladder_dir(world: World, scale: str, cache_dir: str | Path) -> Path:
    """Where the ladder of ``world`` at ``scale`` lives (whether or not it is built yet)."""
    check_scale(scale)
    return Path(cache_dir).expanduser() / "world" / f"{WORLD_VERSION}-{world.fingerprint}-{scale}"


def check_scale(scale: str) -> LadderRecipe:
    if scale not in LADDER_SCALES:
        raise ValueError(f"unknown world ladder scale {scale!r}; choose one of {sorted(LADDER_SCALES)}")
    return LADDER_SCALES[scale]


def is_built(folder: Path, recipe: LadderRecipe) -> bool:
    """True when ``folder`` holds every model and a manifest written for ``recipe``."""
    manifest = folder / MANIFEST_FILE
    if not manifest.exists() or not all((folder / name / "config.json").exists() for name in LADDER_MODELS):
        return False
    return json.loads(manifest.read_text())["recipe"] == json.loads(json.dumps(dataclasses.asdict(recipe)))


def ensure_ladder(world: World, scale: str, cache_dir: str | Path, force: bool = False, progress: bool = False) -> Path:
    """The ladder's folder, built first when it is missing, was built with another recipe, or ``force`` is set.

    Concurrent callers (parallel sweep jobs) wait on a lock file; all but the first then find the ladder built.
    ``progress`` prints what is built, with a progress bar.
    """
    recipe = check_scale(scale)
    folder = ladder_dir(world, scale, cache_dir)
    if not force and is_built(folder, recipe):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(folder.with_name(folder.name + ".lock"), progress):
        if not force and is_built(folder, recipe):
            return folder
        for stale in folder.parent.glob(f"{folder.name}.building-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            Console(stderr=True).print(f"Building the world's model ladder ({scale} scale) into {folder}: once per world and scale.")
        building = Path(tempfile.mkdtemp(prefix=f"{folder.name}.building-", dir=folder.parent))
        try:
            build_ladder(world, recipe, scale, building, progress=progress)
            _replace_dir(building, folder)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return folder


def build_ladder(world: World, recipe: LadderRecipe, scale: str, out_dir: Path, device: str = "cpu", progress: bool = False) -> dict:
    """Train the tokenizer and every ladder model into ``out_dir``; write and return the manifest.

    ``device`` other than the CPU is for experiments only: weights then depend on the hardware too.
    """
    started = time.perf_counter()
    tokenizer = train_world_tokenizer(world, out_dir=out_dir / "tokenizer")
    stages = _Stages(progress)
    models = {}
    with stages, _quiet_libraries():
        small = new_causal_lm(recipe.small, tokenizer, MAX_POSITIONS, _seed(world, "world_small/init")).to(device)
        _pretrain(small, "world_small", recipe.small_pretrain_steps, world, tokenizer, recipe, stages)
        _sft(small, "world_small", recipe.small_sft_noise, world, tokenizer, recipe, stages)
        models["world_small"] = _finish(small, "world_small", recipe.small, world, tokenizer, recipe, out_dir, stages)
        _dpo(small, "world_small_dpo", world, tokenizer, recipe, stages)
        models["world_small_dpo"] = _finish(small, "world_small_dpo", recipe.small, world, tokenizer, recipe, out_dir, stages)

        large = new_causal_lm(recipe.large, tokenizer, MAX_POSITIONS, _seed(world, "world_large/init")).to(device)
        _pretrain(large, "world_large_dpo", recipe.large_pretrain_steps, world, tokenizer, recipe, stages)
        _sft(large, "world_large_dpo", recipe.large_sft_noise, world, tokenizer, recipe, stages)
        _dpo(large, "world_large_dpo", world, tokenizer, recipe, stages)
        models["world_large_dpo"] = _finish(large, "world_large_dpo", recipe.large, world, tokenizer, recipe, out_dir, stages)

    manifest = {
        "world_version": WORLD_VERSION,
        "fingerprint": world.fingerprint,
        "world_config": dataclasses.asdict(world.config),
        "scale": scale,
        "recipe": dataclasses.asdict(recipe),
        "gold_settings": _gold(world, recipe).settings(),
        "models": models,
        "stages": stages.records,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------- stages


def _pretrain(model: PreTrainedModel, name: str, steps: int, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe, stages: _Stages) -> None:
    documents = world.pretraining_corpus(steps * recipe.pretrain_batch_size * DOCUMENTS_PER_ROW)
    rows = pack_rows([document_row(tokenizer, document) for document in documents], MAX_POSITIONS)
    with stages.run(f"{name}/pretrain", steps) as step:
        step.loss = train_next_token(model, rows, steps, recipe.pretrain_batch_size, recipe.pretrain_lr, tokenizer.pad_token_id, _seed(world, f"{name}/pretrain"), step.advance)


def _sft(model: PreTrainedModel, name: str, noise: float, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe, stages: _Stages) -> None:
    examples = world.sft_examples(noise, recipe.sft_steps * recipe.sft_batch_size)
    rows = [demonstration_row(tokenizer, example["prompt"], example["response"]) for example in examples]
    with stages.run(f"{name}/sft", recipe.sft_steps) as step:
        step.loss = train_next_token(model, rows, recipe.sft_steps, recipe.sft_batch_size, recipe.sft_lr, tokenizer.pad_token_id, _seed(world, f"{name}/sft"), step.advance)


def _dpo(model: PreTrainedModel, name: str, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe, stages: _Stages) -> None:
    """DPO of ``model`` in place against a frozen copy of itself, through the framework's PreferenceModule."""
    datamodule = WorldDataModule(
        world, train_pairs=recipe.dpo_steps * recipe.dpo_batch_size, validation_pairs=recipe.dpo_batch_size,
        tokenizer=tokenizer, batch_size=recipe.dpo_batch_size, max_length=MAX_POSITIONS, max_prompt_length=MAX_POSITIONS // 2,
    )
    module = PreferenceModule(
        model, copy.deepcopy(model), DPO(beta=recipe.dpo_beta), functools.partial(torch.optim.AdamW, lr=recipe.dpo_lr, weight_decay=0.0),
        vocab_size=len(tokenizer),
    )
    device = model.device
    with stages.run(f"{name}/dpo", recipe.dpo_steps) as step, torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(world, f"{name}/dpo"))
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=recipe.dpo_steps, gradient_clip_val=1.0,
            limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[_StepCallback(step.advance)],
        )
        trainer.fit(module, datamodule=datamodule)
        step.loss = float(trainer.callback_metrics["train/loss"])
    model.to(device).eval()  # Lightning hands an accelerator's module back on the CPU


def _finish(
    model: PreTrainedModel, name: str, architecture: Architecture, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe, out_dir: Path, stages: _Stages
) -> dict:
    """Save ``model`` with the tokenizer as ``out_dir/name`` and score it with the gold judge; its manifest entry."""
    model.save_pretrained(out_dir / name)
    tokenizer.save_pretrained(out_dir / name)
    with stages.run(f"{name}/gold", 1) as step:
        scores = _gold(world, recipe).score(model, tokenizer, seed=0)
        step.advance(1)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": dataclasses.asdict(architecture),
        "gold_accuracy": round(scores.accuracy, 4),
        "gold_mean_reward": round(scores.mean_reward, 4),
        "gold_accuracy_by_kind": {kind: round(value, 4) for kind, value in scores.accuracy_by_kind().items()},
    }


def _gold(world: World, recipe: LadderRecipe) -> WorldGold:
    return WorldGold(world, n_prompts=recipe.gold_prompts)


# ---------------------------------------------------------------------------------------------- helpers


def _seed(world: World, stage: str) -> int:
    """A stage's own seed: a hash of the world seed and the stage name."""
    return int.from_bytes(hashlib.sha256(f"{world.config.seed}/{stage}".encode()).digest()[:4], "little")


class _StageRun:
    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance
        self.loss: float | None = None


class _Stages:
    """Times each stage into ``records`` and, with ``progress``, shows one progress bar per stage."""

    def __init__(self, progress: bool):
        columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar = Progress(*columns, disable=not progress, console=Console(stderr=True))
        self.records: list[dict] = []

    def __enter__(self) -> _Stages:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    @contextlib.contextmanager
    def run(self, name: str, steps: int) -> Iterator[_StageRun]:
        task = self.bar.add_task(name, total=steps)
        run = _StageRun(lambda step: self.bar.update(task, completed=step))
        started = time.perf_counter()
        yield run
        record = {"stage": name, "steps": steps, "seconds": round(time.perf_counter() - started, 1)}
        if run.loss is not None:
            record["final_loss"] = round(run.loss, 4)
        self.records.append(record)


class _StepCallback(L.Callback):
    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.advance(trainer.global_step)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence Lightning's start-up notices and hints and Hugging Face's progress bars while the ladder is built."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level, bars = lightning_logger.level, hf_logging.is_progress_bar_enabled()
    lightning_logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        lightning_logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _exclusive_lock(path: Path, progress: bool) -> Iterator[None]:
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                Console(stderr=True).print(f"Waiting for another process to finish building {path.with_suffix('')} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing a previous ``target`` (renamed aside first, then removed)."""
    if target.exists():
        old = target.with_name(f"{target.name}.old-{new.name}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
