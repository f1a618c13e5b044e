"""The world's ladder of models, built once per world and recipe into the cache by the world's prepare step.

Three Llama-style models share one tokenizer (``train_world_tokenizer``), all trained from scratch on the world:

- ``world_small``: a small model pretrained on the world's corpus (every fact, all statements true), then
  fine-tuned on noisy demonstrations (``small_sft_noise`` of them state a wrong value, ``small_sft_rule_noise``
  break a format rule): it knows many facts but often says something else, so a policy started from it has room
  to improve (the start gates, ``START_GATES``, say how much);
- ``world_small_dpo``: ``world_small`` after DPO on world preference pairs (the paper's same-size aligned reference);
- ``world_large_dpo``: a larger model pretrained longer, fine-tuned on cleaner demonstrations, then DPO'd the same
  way (the stronger reference).

Pretraining and SFT are a plain next-token loop (``selalign.settings.world.lm_training``). Each DPO rung is a run of
the training entry point itself (``selalign.train.train``), with the recipe's ``dpo`` overrides, the model being
built as the policy, its own starting weights as the reference and the world's clean pairs as data (label noise is an
arm of a study, not of the ladder).

Determinism: every stage seeds its own RNG from the world seed and the stage name, and every stage runs on one CPU
thread. The sums inside torch's CPU kernels are split by thread, so their rounding depends on the thread count (3
threads already give other weights than 1, 2 or 4) and training amplifies the difference; with one thread per stage
a build gives the same weights and manifest whatever the machine's core count and load. What still varies is the
CPU's instruction set (kernels for AVX-512 and for AVX2 round differently) and the library versions; the manifest
records them (``build_environment``). The two chains of models (``world_small`` -> ``world_small_dpo``;
``world_large_sft`` -> ``world_large_dpo``) are independent, so with ``workers=2`` they train at once in two
processes, one core each; ``workers=1`` trains them one after the other in this process, to the same bits.

Layout: ``<cache_dir>/world/<WORLD_VERSION>-<ladder fingerprint>-<recipe key>/`` holds ``tokenizer/``, one
``save_pretrained`` folder (model and tokenizer) per model, each DPO rung's run dir (``<model>.train/``), the answers
that scored each model (``generations/gold/``) and ``manifest.json``: the world, the recipe, per-stage steps, wall
time, CPU time and final loss, and per model its knowledge probe (``probe``: ``WorldSetting.probe`` on every test question),
its sampled answers' gold scores (``gold``: ``gold_samples`` answers at temperature 1 to each of ``gold_prompts``
held-out prompts, scored as ``selalign.benchmarks.gold`` scores them) and its training and scoring seconds, and
whether ``world_small`` meets the start gates. The folder is built by ``selalign.store.build_once``: complete
whenever it exists, built by one process while others wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import platform
import queue
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, variance
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from selalign.settings.world.generator import World, WorldConfig
from selalign.settings.world.lm_training import Architecture, demonstration_row, document_row, new_causal_lm, pack_rows, train_next_token
from selalign.settings.world.tokenizer import train_world_tokenizer
from selalign.store import BuildLock, content_key, model_identity

LADDER_MODELS = ("world_small", "world_small_dpo", "world_large_dpo")
# Every model folder of a ladder: the three above and the large model before its DPO (a selector's base, say).
LADDER_FOLDERS = (*LADDER_MODELS, "world_large_sft")
MANIFEST_FILE = "manifest.json"
# Longest row (prompt + response tokens) any ladder model is trained on or asked to continue.
MAX_POSITIONS = 128
# Corpus documents drawn per packed pretraining row: a little more than fit, so that no document repeats.
DOCUMENTS_PER_ROW = 4
# How the manifest's gold scores are sampled: world responses are at most about 46 tokens.
GOLD_MAX_NEW_TOKENS = 48
GOLD_TEMPERATURE = 1.0
GOLD_SEED = 0
GOLD_BATCH_SIZE = 64
# What the starting policy must be for a study to have room: it knows at least half of the test answers (probe) and
# says at most a fifth of them right when sampling at temperature 1.
START_GATES = {"probe_accuracy_min": 0.5, "sampled_accuracy_max": 0.2}
# The chains of models that train independently of each other, in manifest order.
CHAINS = ("small", "large")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LadderRecipe:
    """How each model of a ladder is trained (the ``setting.ladder`` node of ``conf/setting/world*.yaml``).

    A pretraining step takes ``pretrain_batch_size`` rows of ``MAX_POSITIONS`` tokens, each packed with several
    corpus documents (about 3.4 on average); an SFT step ``sft_batch_size`` demonstrations, ``*_sft_noise`` of them
    stating a wrong value and, independently, ``*_sft_rule_noise`` breaking a format rule. ``dpo`` are the overrides of
    ``python -m selalign.train`` that make each DPO rung (method, steps, learning rate, pairs); the build sets the
    model, the reference (the rung's own start), the data (the world's clean pairs) and the output. Each model is
    scored for the manifest by ``gold_samples`` sampled answers to each of ``gold_prompts`` held-out prompts.
    """

    small: Architecture
    large: Architecture
    small_pretrain_steps: int
    large_pretrain_steps: int
    sft_steps: int
    dpo: tuple[str, ...]
    small_sft_noise: float = 0.3
    large_sft_noise: float = 0.1
    small_sft_rule_noise: float = 0.0
    large_sft_rule_noise: float = 0.0
    pretrain_batch_size: int = 16
    sft_batch_size: int = 32
    pretrain_lr: float = 2e-3
    sft_lr: float = 5e-4
    gold_prompts: int = 240
    gold_samples: int = 8

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
    """Where the ladder of ``world`` and ``recipe`` lives (whether or not it is built yet); worlds that differ only in
    label noise share it (``World.ladder_fingerprint``)."""
    from selalign.settings.world.generator import WORLD_VERSION

    return Path(cache_dir).expanduser() / "world" / f"{WORLD_VERSION}-{world.ladder_fingerprint}-{recipe.key()}"


def build_ladder(world: World, world_settings: dict, recipe: LadderRecipe, out_dir: Path, lock: BuildLock | None = None, progress: bool = False,
                 workers: int = 2) -> dict:
    """Train the tokenizer and every ladder model into ``out_dir``; write and return the manifest.

    ``world_settings`` is the ``setting.world`` node of ``world`` (the DPO rungs' data is made from it, without label
    noise). ``workers``: 2 trains the two chains of models at once in two processes, 1 one after the other in this
    one; the weights and the manifest's scores are the same either way.
    """
    if workers not in (1, 2):
        raise ValueError(f"the ladder trains 1 or 2 chains of models at once (workers), got {workers}")
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_world_tokenizer(world, out_dir=out_dir / "tokenizer")
    clean_settings = {**world_settings, "label_noise": 0.0}
    jobs = {chain: (chain, world.config, clean_settings, recipe, str(out_dir)) for chain in CHAINS}
    with _ProgressBoard(progress, lock) as board, _quiet_libraries():
        if workers == 1:
            results = {chain: _build_chain(*jobs[chain], board.report) for chain in CHAINS}
        else:
            results = _build_chains_in_processes(jobs, board.report)
    models = {name: entry for chain in CHAINS for name, entry in results[chain]["models"].items()}
    start = models["world_small"]
    gates = {
        **START_GATES,
        "probe_accuracy": start["probe"]["accuracy"],
        "sampled_accuracy": start["gold"]["accuracy"],
    }
    gates["met"] = gates["probe_accuracy"] >= START_GATES["probe_accuracy_min"] and gates["sampled_accuracy"] <= START_GATES["sampled_accuracy_max"]
    manifest = {
        "world_config": dataclasses.asdict(world.config),
        "fingerprint": world.ladder_fingerprint,
        "recipe": dataclasses.asdict(recipe),
        "gold_settings": {"n_prompts": recipe.gold_prompts, "samples_per_prompt": recipe.gold_samples, "split": "test",
                          "max_new_tokens": GOLD_MAX_NEW_TOKENS, "temperature": GOLD_TEMPERATURE, "seed": GOLD_SEED},
        "start_gates": gates,
        "models": {name: models[name] for name in LADDER_MODELS},
        "stages": [record for chain in CHAINS for record in results[chain]["stages"]],
        "workers": workers,
        "threads_per_stage": 1,
        "build_environment": build_environment(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if not gates["met"]:
        log.warning("world_small misses the start gates: probe accuracy %.3f (at least %.2f), sampled accuracy %.3f (at most %.2f)",
                    gates["probe_accuracy"], START_GATES["probe_accuracy_min"], gates["sampled_accuracy"], START_GATES["sampled_accuracy_max"])
    return manifest


# ---------------------------------------------------------------------------------------------- chains


Report = Callable[[str, int, int], None]


def _build_chain(chain: str, config: WorldConfig, world_settings: dict, recipe: LadderRecipe, out_dir: str, report: Report) -> dict:
    """Train and score one chain of models on one CPU thread; ``{"models": {name: manifest entry}, "stages": [...]}``."""
    from selalign.models import load_tokenizer

    world, out = World(config), Path(out_dir)
    tokenizer = load_tokenizer(str(out / "tokenizer"))
    stages = _Stages(report)
    models = {}
    with _one_thread(), _quiet_libraries():
        if chain == "small":
            small = new_causal_lm(recipe.small, tokenizer, MAX_POSITIONS, _seed(world, "world_small/init"))
            _pretrain(small, "world_small", recipe.small_pretrain_steps, world, tokenizer, recipe, stages)
            _sft(small, "world_small", recipe.small_sft_noise, recipe.small_sft_rule_noise, world, tokenizer, recipe, stages)
            models["world_small"] = _finish(small, "world_small", recipe.small, tokenizer, out, stages) | _score(small, tokenizer, "world_small", world_settings, recipe, out, stages)
            models["world_small_dpo"] = _dpo(out / "world_small", "world_small_dpo", world, world_settings, recipe, out, stages)
        elif chain == "large":
            large = new_causal_lm(recipe.large, tokenizer, MAX_POSITIONS, _seed(world, "world_large/init"))
            _pretrain(large, "world_large_dpo", recipe.large_pretrain_steps, world, tokenizer, recipe, stages)
            _sft(large, "world_large_dpo", recipe.large_sft_noise, recipe.large_sft_rule_noise, world, tokenizer, recipe, stages)
            _finish(large, "world_large_sft", recipe.large, tokenizer, out, stages)
            models["world_large_dpo"] = _dpo(out / "world_large_sft", "world_large_dpo", world, world_settings, recipe, out, stages)
        else:
            raise ValueError(f"unknown chain {chain!r}; the ladder's chains are {CHAINS}")
    return {"models": models, "stages": stages.records}


def _chain_process(job: tuple, messages: multiprocessing.Queue) -> None:
    """A worker process: build one chain, reporting progress, the result or the error on ``messages``."""
    chain = job[0]
    try:
        result = _build_chain(*job, lambda stage, step, steps: messages.put(("progress", chain, (stage, step, steps))))
        messages.put(("done", chain, result))
    except BaseException:  # the parent names the chain and stops the other one
        messages.put(("failed", chain, traceback.format_exc()))


def _build_chains_in_processes(jobs: dict[str, tuple], report: Report) -> dict[str, dict]:
    """Every chain in its own (spawned) process at once; their results by chain. A failing chain stops the others and
    raises with its traceback."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked thread pools or locks
    messages = context.Queue()
    processes = {chain: context.Process(target=_chain_process, args=(job, messages), name=f"ladder-{chain}", daemon=True) for chain, job in jobs.items()}
    results: dict[str, dict] = {}
    try:
        for process in processes.values():
            process.start()
        while len(results) < len(processes):
            try:
                kind, chain, payload = messages.get(timeout=1.0)
            except queue.Empty:
                lost = [chain for chain, process in processes.items() if chain not in results and not process.is_alive()]
                if lost and messages.empty():
                    time.sleep(1.0)  # a message sent just before the process ended may still be in the pipe
                    if messages.empty():
                        codes = {chain: processes[chain].exitcode for chain in lost}
                        raise RuntimeError(f"the ladder's {' and '.join(lost)} chain process ended without a result (exit codes {codes})")
                continue
            if kind == "progress":
                report(*payload)
            elif kind == "done":
                results[chain] = payload
            else:
                raise RuntimeError(f"building the ladder's {chain} chain failed:\n{payload}")
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
            process.join()
    return results


# ---------------------------------------------------------------------------------------------- stages


def _pretrain(model: PreTrainedModel, name: str, steps: int, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe, stages: _Stages) -> None:
    documents = world.pretraining_corpus(steps * recipe.pretrain_batch_size * DOCUMENTS_PER_ROW)
    rows = pack_rows([document_row(tokenizer, document) for document in documents], MAX_POSITIONS)
    with stages.run(f"{name}/pretrain", steps) as step:
        step.loss = train_next_token(model, rows, steps, recipe.pretrain_batch_size, recipe.pretrain_lr, tokenizer.pad_token_id, _seed(world, f"{name}/pretrain"), step.advance)


def _sft(model: PreTrainedModel, name: str, noise: float, rule_noise: float, world: World, tokenizer: PreTrainedTokenizerBase, recipe: LadderRecipe,
         stages: _Stages) -> None:
    examples = world.sft_examples(noise, recipe.sft_steps * recipe.sft_batch_size, rule_noise=rule_noise)
    rows = [demonstration_row(tokenizer, example["prompt"], example["response"]) for example in examples]
    with stages.run(f"{name}/sft", recipe.sft_steps) as step:
        step.loss = train_next_token(model, rows, recipe.sft_steps, recipe.sft_batch_size, recipe.sft_lr, tokenizer.pad_token_id, _seed(world, f"{name}/sft"), step.advance)


def _dpo(start: Path, name: str, world: World, world_settings: dict, recipe: LadderRecipe, out_dir: Path, stages: _Stages) -> dict:
    """DPO of the model saved at ``start`` against its own starting weights: a run of ``selalign.train``; saved as
    ``out_dir/name``, scored; its manifest entry."""
    from selalign.models import load_causal_lm, load_tokenizer
    from selalign.train import train_with_overrides  # the training entry point builds settings: import it late

    overrides = [
        *recipe.dpo, "model=hub", f"model.name_or_path={start}", "ref_model=policy_init", "data=world",
        f"data.max_length={MAX_POSITIONS}", f"seed={_seed(world, f'{name}/dpo')}",
    ]
    run_dir = out_dir / f"{name}.train"
    steps = _max_steps(recipe.dpo)
    with stages.run(f"{name}/dpo", steps) as step:
        setting = {"_target_": "selalign.settings.world.WorldSetting", "cache_dir": str(out_dir.parent), "world": world_settings}
        metrics = train_with_overrides(overrides, setting, run_dir, callbacks=[_StepCallback(step.advance)])
        step.loss = metrics.get("train/loss")
    (run_dir / "policy").rename(out_dir / name)  # the run's config.yaml and metrics.json stay beside it
    model = load_causal_lm(str(out_dir / name))
    entry = {"parameters": sum(p.numel() for p in model.parameters())}
    entry |= _score(model, load_tokenizer(str(out_dir / name)), name, world_settings, recipe, out_dir, stages)
    entry["dpo_run"] = {
        "start": start.name,  # the build's folder is a temporary one: the overrides name the start by its folder in the ladder
        "overrides": [o if not o.startswith("model.name_or_path=") else f"model.name_or_path=<ladder>/{start.name}" for o in overrides],
        "train_loss": metrics.get("train/loss"),
        "val_rewards_accuracies": metrics.get("val/rewards/accuracies"),
    }
    return entry


def _max_steps(overrides: tuple[str, ...]) -> int:
    """The ``trainer.max_steps`` of a rung's overrides (for its progress bar)."""
    for override in overrides:
        if override.startswith("trainer.max_steps="):
            return int(override.split("=", 1)[1])
    raise ValueError(f"setting.ladder.dpo must set trainer.max_steps=<steps> (got {list(overrides)})")


def _finish(model: PreTrainedModel, name: str, architecture: Architecture, tokenizer: PreTrainedTokenizerBase, out_dir: Path, stages: _Stages) -> dict:
    """Save ``model`` with the tokenizer as ``out_dir/name``; the start of its manifest entry."""
    model.save_pretrained(out_dir / name)
    tokenizer.save_pretrained(out_dir / name)
    return {"parameters": sum(p.numel() for p in model.parameters()), "architecture": dataclasses.asdict(architecture)}


def _score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, world_settings: dict, recipe: LadderRecipe, out_dir: Path,
           stages: _Stages) -> dict:
    """The model saved as ``out_dir/name``, measured as a study measures it: the knowledge probe (``WorldSetting.probe``)
    and the gold evaluation's scores of ``gold_samples`` answers to each of ``gold_prompts`` held-out prompts.

    ``gold``: each breakdown value of the gold scorer (``accuracy`` is the sampled accuracy, the expected accuracy at
    temperature 1; ``wrong``, ``no_value``, ``repetitive``, ``missing_end``, ``accuracy/<kind>``) and ``mean_reward``,
    means over prompts of the per-prompt means over samples; ``accuracy_se`` and ``mean_reward_se``: their Monte-Carlo
    standard errors on these prompts, sqrt(sum_i s_i^2 / K) / P with s_i^2 the variance of prompt i's K samples (None
    for K = 1); ``accuracy_se_prompts``: the standard error over prompts (what another draw of questions would add).
    The answers stay in ``out_dir/generations/gold/``. Also ``train_seconds`` (the model's own training stages; a DPO
    rung's is its DPO run) and ``score_seconds``.
    """
    from selalign.benchmarks.gold import GoldEvaluation, standard_error
    from selalign.generators import Policy
    from selalign.generators.hf import HFGenerator
    from selalign.settings.world.setting import WorldSetting

    setting = WorldSetting(str(out_dir), world=world_settings)  # the ladder's folder keeps the answers that scored it
    evaluation = GoldEvaluation(setting, recipe.gold_prompts, GOLD_MAX_NEW_TOKENS, GOLD_TEMPERATURE, recipe.gold_samples, probe=False, kl_to_start=False)
    train_seconds = round(sum(record["seconds"] for record in stages.records if record["stage"].startswith(f"{name}/")), 1)
    started = time.perf_counter()
    with stages.run(f"{name}/score", 1) as step:
        probe = setting.probe(model, tokenizer)
        policy = Policy(name_or_path=str(out_dir / name), identity=model_identity(out_dir / name), tokenizer=tokenizer, model=model)
        answers = evaluation.answers(HFGenerator(batch_size=GOLD_BATCH_SIZE, progress=False), policy, GOLD_SEED)
        rewards, breakdown = evaluation.per_prompt(evaluation.prompts, answers)
        step.advance(1)
    k = recipe.gold_samples
    gold = {name: round(fmean(applicable), 4) for name, values in breakdown.items() if (applicable := [v for v in values if v is not None])}
    gold["mean_reward"] = round(fmean(fmean(r) for r in rewards), 4)
    # Variances of each prompt's sample mean: p(1 - p) / (K - 1) for a 0/1 value, s^2 / K for rewards.
    gold["accuracy_se"] = _monte_carlo_se([p * (1 - p) / (k - 1) for p in breakdown["accuracy"]]) if k > 1 else None
    gold["mean_reward_se"] = _monte_carlo_se([variance(r) / k for r in rewards]) if k > 1 else None
    gold["accuracy_se_prompts"] = round(standard_error(breakdown["accuracy"]), 4)
    return {
        "probe": {name: round(value, 4) for name, value in probe.items()},
        "gold": gold,
        "train_seconds": train_seconds,
        "score_seconds": round(time.perf_counter() - started, 1),
    }


def build_environment() -> dict[str, str]:
    """What a ladder's weights depend on besides the world and the recipe: the CPU kernels torch dispatched to (their
    rounding differs between instruction sets) and the libraries' versions. Two builds with equal entries give the
    same weights; with different ones, expect another draw of the same world's models (docs/results/world_study.md
    shows one: the study's ladder rebuilt on another machine)."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "lightning": L.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


def _monte_carlo_se(mean_variances: list[float]) -> float:
    """Standard error of a mean over P prompts of per-prompt sample means, given the variance of each prompt's sample
    mean: sqrt(sum_i v_i) / P."""
    return round(math.sqrt(sum(mean_variances)) / len(mean_variances), 4)


# ---------------------------------------------------------------------------------------------- helpers


def _seed(world: World, stage: str) -> int:
    """A stage's own seed: a hash of the world seed and the stage name."""
    return int.from_bytes(hashlib.sha256(f"{world.config.seed}/{stage}".encode()).digest()[:4], "little")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block (the thread count changes CPU kernels' rounding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _StageRun:
    def __init__(self, advance: Callable[[int], None]):
        self.advance = advance
        self.loss: float | None = None


class _Stages:
    """Times each stage of a chain into ``records`` and calls ``report(stage, step, steps)`` as it goes."""

    def __init__(self, report: Report):
        self.report = report
        self.records: list[dict] = []

    @contextlib.contextmanager
    def run(self, name: str, steps: int) -> Iterator[_StageRun]:
        started, cpu_started = time.perf_counter(), time.process_time()
        self.report(name, 0, steps)
        run = _StageRun(lambda step: self.report(name, step, steps))
        yield run
        # cpu_seconds: this process's CPU time, which other jobs on the machine barely change (its wall time they do)
        record = {"stage": name, "steps": steps, "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - cpu_started, 1)}
        if run.loss is not None:
            record["final_loss"] = round(run.loss, 4)
        self.records.append(record)


class _ProgressBoard:
    """One progress bar per stage (with ``progress``), and each stage's progress reported to the build lock."""

    def __init__(self, progress: bool, lock: BuildLock | None):
        columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar = Progress(*columns, disable=not progress, console=Console(stderr=True))
        self.lock = lock
        self.tasks: dict[str, Any] = {}
        self.started = time.perf_counter()

    def __enter__(self) -> _ProgressBoard:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def report(self, stage: str, step: int, steps: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=steps)
        self.bar.update(self.tasks[stage], completed=step)
        if self.lock is not None and (step in (0, steps) or step % 25 == 0):
            self.lock.report(f"{stage}, step {step} of {steps}, {time.perf_counter() - self.started:.0f} s into the build")


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
