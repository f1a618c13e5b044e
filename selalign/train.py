"""Training entry point: `python -m selalign.train` (or `selalign-train`) with Hydra overrides.

Compose the config, build data and models, fit the PreferenceModule, evaluate, save.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from selalign.benchmarks.base import EvalContext
from selalign.checkpointing import find_resume_checkpoint
from selalign.loggers import finish_wandb_run
import selalign.resolvers  # noqa: F401  registers the config resolvers of conf/
from selalign.models import check_embedding_covers, check_same_vocabulary, load_tokenizer
from selalign.module import PreferenceModule
from selalign.refcache import cached_reference_logps
from selalign.report import print_run_summary

log = logging.getLogger(__name__)


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a config dict (the logger and callbacks groups); ``name=null`` removes an entry."""
    return [hydra.utils.instantiate(entry) for entry in (cfg or {}).values() if entry is not None]


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items() if torch.is_tensor(value) and value.numel() == 1}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the flat metrics also written to metrics.json."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    objective = hydra.utils.instantiate(cfg.method)  # hyperparameter errors surface here, before any loading
    evaluation = hydra.utils.instantiate(cfg.benchmark) if cfg.benchmark else None
    generator = hydra.utils.instantiate(cfg.generator)  # how the evaluation generates answers; a missing engine fails here
    if cfg.ref_cache and not objective.needs_reference:
        raise ValueError(f"ref_cache=true, but {type(objective).__name__} uses no reference model: there is nothing to cache")
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    frozen_roles = {"reference": cfg.ref_model} if objective.needs_reference else {}
    if objective.needs_teacher:
        frozen_roles["teacher"] = cfg.teacher_model
        if cfg.ref_cache:
            log.warning("ref_cache=true: reference log-probs come from the cache, but %s keeps a live teacher (%s)", type(objective).__name__, cfg.teacher_model.name_or_path)
    for role, model_cfg in frozen_roles.items():
        other = load_tokenizer(model_cfg.name_or_path, trust_remote_code=model_cfg.trust_remote_code)
        check_same_vocabulary(tokenizer, cfg.model.name_or_path, other, model_cfg.name_or_path, role)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, output_dir=str(run_dir))
    datamodule.setup("fit")  # bad rows fail here, before any model is loaded

    reference = teacher = None
    if objective.needs_reference and cfg.ref_cache:
        chosen, rejected, _ = cached_reference_logps(cfg.ref_model, lambda: hydra.utils.instantiate(cfg.ref_model), datamodule, cfg.paths.cache_dir, datamodule.eval_batch_size)
        datamodule.attach_reference_logps(chosen, rejected)
    elif objective.needs_reference:
        reference = hydra.utils.instantiate(cfg.ref_model)
        check_embedding_covers(reference, tokenizer, cfg.ref_model.name_or_path, "reference")
    if objective.needs_teacher:
        same_as_reference = reference is not None and OmegaConf.to_container(cfg.teacher_model, resolve=True) == OmegaConf.to_container(cfg.ref_model, resolve=True)
        teacher = reference if same_as_reference else hydra.utils.instantiate(cfg.teacher_model)
        check_embedding_covers(teacher, tokenizer, cfg.teacher_model.name_or_path, "teacher")
    policy = hydra.utils.instantiate(cfg.model)
    check_embedding_covers(policy, tokenizer, cfg.model.name_or_path, "policy")
    module = PreferenceModule(
        policy, reference, objective, hydra.utils.instantiate(cfg.optimizer), hydra.utils.instantiate(cfg.scheduler),
        teacher=teacher, vocab_size=len(tokenizer),
    )

    resume_from = None
    if cfg.resume == "auto":
        resume_from = find_resume_checkpoint(cfg, cfg.paths.root_dir, run_dir)
        log.info("resume=auto: %s", f"continuing from {resume_from}" if resume_from else "no earlier checkpoint of this config, starting fresh")
    elif cfg.resume is not None:
        raise ValueError(f"resume must be null or 'auto', got {cfg.resume!r}")

    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=instantiate_dict(cfg.logger) or False, callbacks=instantiate_dict(cfg.callbacks))
    started = time.perf_counter()
    # Checkpoints found by resume=auto are this config's own (they hold RNG states, hence not weights-only).
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=False if resume_from else None)
    metrics = scalar_metrics(trainer) | {"time/train_seconds": time.perf_counter() - started}
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics |= scalar_metrics(trainer)
    metrics |= {f"data/{name}": float(value) for name, value in datamodule.stats.items()}

    # Under FSDP the full policy weights are gathered (on rank 0); every rank must take part in the gathering.
    state = trainer.strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        policy.save_pretrained(run_dir / "policy", state_dict={k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")})
        tokenizer.save_pretrained(run_dir / "policy")
        if evaluation is not None:
            trained_cfg = OmegaConf.merge(cfg.model, {"name_or_path": str(run_dir / "policy")})  # caches key on the trained weights
            context = EvalContext(policy.eval(), tokenizer, run_dir, trained_cfg, cfg.ref_model, cfg.model, datamodule, cfg.seed, generator)
            evaluation_metrics = evaluation.evaluate(context)
            for logger in trainer.loggers:  # benchmark results on the same dashboard as training
                logger.log_metrics(evaluation_metrics, step=trainer.global_step)
            metrics |= evaluation_metrics
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    finish_wandb_run()
    return metrics


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        metrics = train(cfg)
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
