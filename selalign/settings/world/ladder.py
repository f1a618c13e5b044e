"""The world's ladder of models, built once per world and recipe into the cache by the world's prepare step.

Three Llama-style models share one tokenizer (``train_world_tokenizer``), all trained from scratch on the world:

- ``world_small``: a small model pretrained on the world's corpus (every fact, all statements true), then
  fine-tuned on noisy demonstrations (``small_sft_noise`` of them state a wrong value): it knows many facts but
  often says something else, so a policy started from it has room to improve;
- ``world_small_dpo``: ``world_small`` after DPO on world preference pairs (the paper's same-size aligned reference);
- ``world_large_dpo``: a larger model pretrained longer, fine-tuned on cleaner demonstrations, then DPO'd the same
  way (the stronger reference).

Pretraining and SFT are a plain next-token loop (``selalign.settings.world.lm_training``). Each DPO rung is a run of
the training entry point itself (``selalign.train.train``), with the recipe's ``dpo`` overrides, the model being
built as the policy, its own starting weights as the reference and the world's pairs as data. Every stage seeds its
own RNG from the world seed and the stage name; the build runs on the CPU.

Layout: ``<cache_dir>/world/<WORLD_VERSION>-<world fingerprint>-<recipe key>/`` holds ``tokenizer/``, one
``save_pretrained`` folder (model and tokenizer) per model, and ``manifest.json`` (world, recipe, per-stage steps,
wall time and final loss, and each model's gold accuracy and mean reward on held-out prompts). The folder is built
by ``selalign.store.build_once``: complete whenever it exists, built by one process while others wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from selalign.generators import Policy, Sampling
from selalign.generators.hf import HFGenerator
from selalign.settings.world.generator import World
from selalign.settings.world.lm_training import Architecture, demonstration_row, document_row, new_causal_lm, pack_rows, train_next_token
from selalign.settings.world.scorer import WorldScorer
from selalign.settings.world.tokenizer import train_world_tokenizer
from selalign.store import BuildLock, content_key

LADDER_MODELS = ("world_small", "world_small_dpo", "world_large_dpo")
# Every model folder of a ladder: the three above and the large model before its DPO (a selector's base, say).
LADDER_FOLDERS = (*LADDER_MODELS, "world_large_sft")
MANIFEST_FILE = "manifest.json"
# Longest row (prompt + response tokens) any ladder model is trained on or asked to continue.
MAX_POSITIONS = 128
# Corpus documents drawn per packed pretraining row: a little more than fit, so that no document repeats.
DOCUMENTS_PER_ROW = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LadderRecipe:
    """How each model of a ladder is trained (the ``setting.ladder`` node of ``conf/setting/world*.yaml``).

    A pretraining step takes ``pretrain_batch_size`` rows of ``MAX_POSITIONS`` tokens, each packed with several
    corpus documents (about 3.4 on average); an SFT step ``sft_batch_size`` demonstrations. ``dpo`` are the
    overrides of ``python -m selalign.train`` that make each DPO rung (method, steps, learning rate, pairs); the
    build sets the model, the reference (the rung's own start), the data (the world's pairs) and the output.
    ``gold_prompts`` held-out prompts score each model for the manifest.
    """

    small: Architecture
    large: Architecture
    small_pretrain_steps: int
    large_pretrain_steps: int
    sft_steps: int
    dpo: tuple[str, ...]
    small_sft_noise: float = 0.3
    large_sft_noise: float = 0.1
    pretrain_batch_size: int = 16
    sft_batch_size: int = 32
    pretrain_lr: float = 2e-3
    sft_lr: float = 5e-4
    gold_prompts: int = 436

    @classmethod
    def from_dict(cls, recipe: dict[str, Any]) -> LadderRecipe:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recipe) - fields)
        if unknown:
            raise ValueError(f"setting.ladder has unknown keys {unknown}; the recipe's keys are {sorted(fields)}")
        values = dict(recipe, small=Architecture(**recipe["small"]), large=Architecture(**recipe["large"]), dpo=tuple(recipe["dpo"]))
        return cls(**values)

    def key(self) -> str:
        """A short hash of the recipe: ladders of other recipes live in other folders."""
        return content_key(dataclasses.asdict(self))[:12]


def ladder_dir(world: World, recipe: LadderRecipe, cache_dir: str | Path) -> Path:
    """Where the ladder of ``world`` and ``recipe`` lives (whether or not it is built yet)."""
    from selalign.settings.world.generator import WORLD_VERSION

    return Path(cache_dir).expanduser() / "world" / f"{WORLD_VERSION}-{world.fingerprint}-{recipe.key()}"


def build_ladder(world: World, world_settings: dict, recipe: LadderRecipe, out_dir: Path, lock: BuildLock | None = None, progress: bool = False) -> dict:
    """Train the tokenizer and every ladder model into ``out_dir``; write and return the manifest.

    ``world_settings`` is the ``setting.world`` node the DPO rungs' data is made from (the world of ``world``).
    """
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_world_tokenizer(world, out_dir=out_dir / "tokenizer")
    stages = _Stages(progress, lock)
    models = {}
    with stages, _quiet_libraries():
        small = new_causal_lm(recipe.small, tokenizer, MAX_POSITIONS, _seed(world, "world_small/init"))
        _pretrain(small, "world_small", recipe.small_pretrain_steps, world, tokenizer, recipe, stages)
        _sft(small, "world_small", recipe.small_sft_noise, world, tokenizer, recipe, stages)
        models["world_small"] = _finish(small, "world_small", recipe.small, world, tokenizer, recipe, out_dir, stages)
        models["world_small_dpo"] = _dpo(out_dir / "world_small", "world_small_dpo", world, world_settings, recipe, out_dir, stages)

        large = new_causal_lm(recipe.large, tokenizer, MAX_POSITIONS, _seed(world, "world_large/init"))
        _pretrain(large, "world_large_dpo", recipe.large_pretrain_steps, world, tokenizer, recipe, stages)
        _sft(large, "world_large_dpo", recipe.large_sft_noise, world, tokenizer, recipe, stages)
        _finish(large, "world_large_sft", recipe.large, world, tokenizer, recipe, out_dir, stages, score=False)
        models["world_large_dpo"] = _dpo(out_dir / "world_large_sft", "world_large_dpo", world, world_settings, recipe, out_dir, stages)

    manifest = {
        "world_config": dataclasses.asdict(world.config),
        "fingerprint": world.fingerprint,
        "recipe": dataclasses.asdict(recipe),
        "gold_settings": {"n_prompts": recipe.gold_prompts, "split": "test", "max_new_tokens": 48, "temperature": 1.0, "seed": 0},
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


def _dpo(start: Path, name: str, world: World, world_settings: dict, recipe: LadderRecipe, out_dir: Path, stages: _Stages) -> dict:
    """DPO of the model saved at ``start`` against its own starting weights: a run of ``selalign.train``; saved as ``out_dir/name``."""
    from selalign.train import train_with_overrides  # the training entry point builds settings: import it late

    overrides = [
        *recipe.dpo, "model=hub", f"model.name_or_path={start}", "ref_model=policy_init", "data=world",
        f"data.max_length={MAX_POSITIONS}", f"seed={_seed(world, f'{name}/dpo')}",
    ]
    run_dir = out_dir / f"{name}.train"
    steps = _max_steps(recipe.dpo)
    with stages.run(f"{name}/dpo", steps) as step:
        metrics = train_with_overrides(overrides, {"_target_": "selalign.settings.world.WorldSetting", "cache_dir": str(out_dir.parent), "world": world_settings},
                                       run_dir, callbacks=[_StepCallback(step.advance)])
        step.loss = metrics.get("train/loss")
    (run_dir / "policy").rename(out_dir / name)  # the run's config.yaml and metrics.json stay beside it
    from selalign.models import load_causal_lm, load_tokenizer

    entry = _score(load_causal_lm(str(out_dir / name)), load_tokenizer(str(out_dir / name)), name, world, recipe, stages)
    entry["dpo_run"] = {"overrides": overrides, "train_loss": metrics.get("train/loss"), "val_rewards_accuracies": metrics.get("val/rewards/accuracies")}
    return entry


def _max_steps(overrides: tuple[str, ...]) -> int:
    """The ``trainer.max_steps`` of a rung's overrides (for its progress bar)."""
    for override in overrides:
        if override.startswith("trainer.max_steps="):
            return int(override.split("=", 1)[1])
    raise ValueError(f"setting.ladder.dpo must set trainer.max_steps=<steps> (got {list(overrides)})")


def _finish(
    model: PreTrainedModel, name: str, architecture: Architecture, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe,
    out_dir: Path, stages: _Stages, score: bool = True,
) -> dict:
    """Save ``model`` with the tokenizer as ``out_dir/name`` and, with ``score``, score it; its manifest entry."""
    model.save_pretrained(out_dir / name)
    tokenizer.save_pretrained(out_dir / name)
    entry = {"parameters": sum(p.numel() for p in model.parameters()), "architecture": dataclasses.asdict(architecture)}
    return entry | (_score(model, tokenizer, name, world, recipe, stages) if score else {})


def _score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, world: World, recipe: LadderRecipe, stages: _Stages) -> dict:
    """Gold accuracy and mean reward of ``model`` on ``recipe.gold_prompts`` held-out prompts (sampled at temperature 1, seed 0)."""
    prompts = world.eval_prompts(recipe.gold_prompts)
    with stages.run(f"{name}/gold", 1) as step:
        conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
        answers = HFGenerator(batch_size=32, progress=False).generate(Policy(model=model, tokenizer=tokenizer), conversations, Sampling(48, 1.0, seed=0))
        scores = WorldScorer(world).score([p["prompt"] for p in prompts], answers)
        step.advance(1)
    by_kind = {name.split("/", 1)[1]: [v for v in values if v is not None] for name, values in scores.breakdown.items() if name.startswith("accuracy/")}
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "gold_accuracy": round(sum(scores.breakdown["accuracy"]) / len(prompts), 4),
        "gold_mean_reward": round(sum(scores.rewards) / len(prompts), 4),
        "gold_accuracy_by_kind": {kind: round(sum(v) / len(v), 4) for kind, v in by_kind.items() if v},
    }


# ---------------------------------------------------------------------------------------------- helpers


def _seed(world: World, stage: str) -> int:
    """A stage's own seed: a hash of the world seed and the stage name."""
    return int.from_bytes(hashlib.sha256(f"{world.config.seed}/{stage}".encode()).digest()[:4], "little")


class _StageRun:
    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance
        self.loss: float | None = None


class _Stages:
    """Times each stage into ``records``; with ``progress``, one progress bar per stage; reports each stage to the build lock."""

    def __init__(self, progress: bool, lock: BuildLock | None = None):
        columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar = Progress(*columns, disable=not progress, console=Console(stderr=True))
        self.lock = lock
        self.records: list[dict] = []

    def __enter__(self) -> _Stages:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    @contextlib.contextmanager
    def run(self, name: str, steps: int) -> Iterator[_StageRun]:
        task = self.bar.add_task(name, total=steps)
        started = time.perf_counter()

        def advance(step: int) -> None:
            self.bar.update(task, completed=step)
            if self.lock is not None and (step == steps or step % 25 == 0):
                self.lock.report(f"stage {len(self.records) + 1}: {name}, step {step} of {steps}, {time.perf_counter() - started:.0f} s in")

        run = _StageRun(advance)
        if self.lock is not None:
            self.lock.report(f"stage {len(self.records) + 1}: {name}, starting")
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

