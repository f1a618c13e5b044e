"""Training entry point: `python -m selalign.train` (or `selalign-train`) with Hydra overrides.

Compose the config, build data and models, fit the PreferenceModule, evaluate, save.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from selalign.models import check_embedding_covers, check_same_vocabulary, load_tokenizer
from selalign.module import PreferenceModule

log = logging.getLogger(__name__)


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a config dict (the logger and callbacks groups): name -> object."""
    return [hydra.utils.instantiate(entry) for entry in (cfg or {}).values()]


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items() if torch.is_tensor(value) and value.numel() == 1}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns the flat metrics also written to metrics.json."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    objective = hydra.utils.instantiate(cfg.method)
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    if objective.needs_reference:
        ref_tokenizer = load_tokenizer(cfg.ref_model.name_or_path, trust_remote_code=cfg.ref_model.trust_remote_code)
        check_same_vocabulary(tokenizer, cfg.model.name_or_path, ref_tokenizer, cfg.ref_model.name_or_path, "reference")
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, output_dir=str(run_dir))
    datamodule.setup("fit")  # bad rows fail here, before any model is loaded

    policy = hydra.utils.instantiate(cfg.model)
    check_embedding_covers(policy, tokenizer, cfg.model.name_or_path, "policy")
    reference = None
    if objective.needs_reference:
        reference = hydra.utils.instantiate(cfg.ref_model)
        check_embedding_covers(reference, tokenizer, cfg.ref_model.name_or_path, "reference")
    module = PreferenceModule(policy, reference, objective, hydra.utils.instantiate(cfg.optimizer), hydra.utils.instantiate(cfg.scheduler))

    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=instantiate_dict(cfg.logger) or False, callbacks=instantiate_dict(cfg.callbacks))
    trainer.fit(module, datamodule=datamodule)
    metrics = scalar_metrics(trainer)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics |= scalar_metrics(trainer)
    metrics |= {f"data/{name}": float(value) for name, value in datamodule.stats.items()}

    if trainer.is_global_zero:
        policy.save_pretrained(run_dir / "policy")
        tokenizer.save_pretrained(run_dir / "policy")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
