"""Training entry point: `python -m selalign.train` (or `selalign-train`) with Hydra overrides.

Compose the config, build data and models, fit the PreferenceModule, evaluate, save.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from selalign.benchmarks.base import EvalContext
from selalign.callbacks import TrainTokensPerSecond
from selalign.checkpointing import RestoreDataPosition, RunAlreadyComplete, find_resume_checkpoint
from selalign.loggers import finish_wandb_run, silence_known_noise
import selalign.resolvers  # noqa: F401  registers the config resolvers of conf/
from selalign.models import adapter_reference, check_embedding_covers, check_same_vocabulary, load_tokenizer
from selalign.data.collator import CACHED_LOGPS
from selalign.module import PreferenceModule, frozen_roles
from selalign.prepare import compose_train_config, prepare_for_run
from selalign.refcache import LogpsCacheBuilder, cache_file, load_cache
from selalign.report import print_run_summary
from selalign.store import remove_path
from selalign.strategies import full_policy_state_dict

log = logging.getLogger(__name__)


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a config dict (the logger and callbacks groups); ``name=null`` removes an entry."""
    return [hydra.utils.instantiate(entry) for entry in (cfg or {}).values() if entry is not None]


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items() if torch.is_tensor(value) and value.numel() == 1}


def train(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the flat metrics also written to metrics.json.

    With ``resume=auto``, continues the newest earlier run of the same config from its checkpoint, or raises
    ``RunAlreadyComplete`` (naming its results) when that run finished. ``callbacks`` are added to the configured
    ones (a caller's progress report, say).
    """
    silence_known_noise()
    run_started = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    resume_from = None
    if cfg.resume == "auto":  # before this run writes anything: a finished earlier run raises RunAlreadyComplete
        resume_from = find_resume_checkpoint(cfg, cfg.paths.root_dir, run_dir)
        log.info("resume=auto: %s", f"continuing from {resume_from}" if resume_from else "no earlier checkpoint of this config, starting fresh")
    elif cfg.resume is not None:
        raise ValueError(f"resume must be null or 'auto', got {cfg.resume!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # resolution only looks paths up
    L.seed_everything(cfg.seed, workers=True)

    objective = hydra.utils.instantiate(cfg.method)  # hyperparameter errors surface here, before any loading
    evaluation = hydra.utils.instantiate(cfg.benchmark) if cfg.benchmark else None
    generator = hydra.utils.instantiate(cfg.generator)  # how the evaluation generates answers; a missing engine fails here
    if cfg.get("setting"):
        prepare_for_run(hydra.utils.instantiate(cfg.setting, _convert_="all"), cfg)  # builds what the run uses and is missing
    role_cfgs = {"reference": cfg.ref_model, "teacher": cfg.teacher_model, "selector": cfg.get("selector_model"), "selector_base": cfg.get("selector_base_model")}
    roles = frozen_roles(objective, has_selector=role_cfgs["selector"] is not None)
    for role in roles:
        if role_cfgs[role] is None:
            raise ValueError(f"{type(objective).__name__} (with its scorer) reads a {role} model: set {role}_model=<a model config>")
    cached = [role for role in roles if cfg.ref_cache and role in CACHED_LOGPS and role not in objective.distributions]
    if cfg.ref_cache and not cached:
        live = [role for role in roles if role in objective.distributions]
        why = f"reads the next-token distributions of {live}, which run live every step" if live else "reads no frozen model's log-probs"
        raise ValueError(f"ref_cache=true, but {type(objective).__name__} {why}: there is nothing to cache")
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    for role in roles:
        other = load_tokenizer(role_cfgs[role].name_or_path, trust_remote_code=role_cfgs[role].trust_remote_code)
        check_same_vocabulary(tokenizer, cfg.model.name_or_path, other, role_cfgs[role].name_or_path, role)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, output_dir=str(run_dir))
    datamodule.setup("fit")  # bad rows fail here, before any model is loaded

    to_build = {}  # role -> cache file and key of the caches built at fit start (LogpsCacheBuilder)
    for role in cached:
        path, key = cache_file(role_cfgs[role], datamodule, cfg.paths.cache_dir, str(cfg.trainer.precision))
        found = load_cache(path, key, datamodule)
        if found is None:
            to_build[role] = (path, key)
        else:
            log.info("%s log-probs read from cache %s", role, path)
            datamodule.attach_cached_logps(role, *found)
    policy = hydra.utils.instantiate(cfg.model)
    check_embedding_covers(policy, tokenizer, cfg.model.name_or_path, "policy")
    frozen, loaded = {}, {}  # one model object per distinct config, whatever the roles it plays
    for role in roles:
        if role in cached and role not in to_build:
            continue
        key = json.dumps(OmegaConf.to_container(role_cfgs[role], resolve=True), sort_keys=True)
        if key not in loaded:
            loaded[key] = adapter_reference(policy, cfg.model.name_or_path, role_cfgs[role])  # a PEFT policy's base or adapter
            if loaded[key] is None:
                loaded[key] = hydra.utils.instantiate(role_cfgs[role])
                check_embedding_covers(loaded[key], tokenizer, role_cfgs[role].name_or_path, role)
        frozen[role] = loaded[key]
    module = PreferenceModule(
        policy, frozen.get("reference"), objective, hydra.utils.instantiate(cfg.optimizer), hydra.utils.instantiate(cfg.scheduler),
        teacher=frozen.get("teacher"), selector=frozen.get("selector"), selector_base=frozen.get("selector_base"), vocab_size=len(tokenizer),
    )

    callbacks = [*instantiate_dict(cfg.callbacks), RestoreDataPosition(), TrainTokensPerSecond(), *callbacks]
    if to_build:  # first, so that every other callback already reads the cache
        callbacks.insert(0, LogpsCacheBuilder(to_build, datamodule.eval_batch_size))
    # Without a checkpoint callback Lightning would add its own, writing a full checkpoint every epoch.
    checkpointing = any(isinstance(callback, ModelCheckpoint) for callback in callbacks)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=instantiate_dict(cfg.logger) or False, callbacks=callbacks, enable_checkpointing=checkpointing)
    for callback in trainer.callbacks:
        if hasattr(callback, "on_run_start"):  # callbacks that time the whole job (learning curves)
            callback.on_run_start(run_started)
    started = time.perf_counter()
    # Checkpoints found by resume=auto are this config's own (they hold RNG states, hence not weights-only).
    if objective.trains:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=False if resume_from else None)
    metrics = scalar_metrics(trainer) | {"time/train_seconds": time.perf_counter() - started}
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics |= scalar_metrics(trainer)
    metrics |= {f"data/{name}": float(value) for name, value in datamodule.stats.items()}

    # Under FSDP and DeepSpeed the full policy weights are gathered (on rank 0); every rank must take part in the gathering.
    state = full_policy_state_dict(trainer)
    if trainer.is_global_zero:
        policy.save_pretrained(run_dir / "policy", state_dict=state)
        tokenizer.save_pretrained(run_dir / "policy")
        if evaluation is not None:
            trained_cfg = OmegaConf.merge(cfg.model, {"name_or_path": str(run_dir / "policy")})  # caches key on the trained weights
            context = EvalContext(policy.eval(), tokenizer, run_dir, trained_cfg, cfg.ref_model, cfg.model, datamodule, cfg.seed, generator)
            evaluation_metrics = evaluation.evaluate(context)
            for logger in trainer.loggers:  # benchmark results on the same dashboard as training
                logger.log_metrics(evaluation_metrics, step=trainer.global_step)
            metrics |= evaluation_metrics
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if not cfg.checkpoint.keep:  # the run is complete: policy/ holds its weights, resuming needs nothing more
            remove_path(run_dir / "checkpoints" / "last.ckpt")  # a file, or a folder of shards
    finish_wandb_run()
    return metrics


def train_with_overrides(overrides: Sequence[str], setting: dict | None, output_dir: str | Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """``train`` on the training config composed with ``overrides``, as ``python -m selalign.train <overrides>`` would,
    with the given ``setting`` node (or none), no logger, callbacks or benchmark, into ``output_dir``.

    How settings train their own models (a DPO-tuned reference) through the same path as every user run.
    """
    fixed = ["logger=none", "callbacks=none", "benchmark=none", f"paths.output_dir={output_dir}"]
    cfg = compose_train_config([*overrides, *fixed])
    with open_dict(cfg):
        cfg.setting = setting
    return train(cfg, callbacks)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        metrics = train(cfg)
    except RunAlreadyComplete as complete:
        log.warning("%s", complete)
        rank_zero_only(print_run_summary)(json.loads((complete.run_dir / "metrics.json").read_text()), complete.run_dir)
        return
    except Exception:
        # Keep the error with the run; in a sweep, the other jobs go on.
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.paths.output_dir) / "error.txt").write_text(traceback.format_exc())
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.exception("job failed; its error is in %s/error.txt", cfg.paths.output_dir)
            return
        raise
    rank_zero_only(print_run_summary)(metrics, Path(cfg.paths.output_dir))


if __name__ == "__main__":
    main()
