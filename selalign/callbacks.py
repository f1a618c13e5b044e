"""Lightning callbacks: token-selection pictures, learning curves and the wandb sync command (the ``callbacks`` config
group), and the training throughput that every run reports."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader

from selalign.objectives import ObjectiveOutput
from selalign.pictures import pair_pictures, selection_html

log = logging.getLogger(__name__)


def first_pairs(loader: DataLoader, num_pairs: int) -> dict[str, torch.Tensor]:
    """One batch of the first ``num_pairs`` pairs of ``loader``'s dataset, collated by its own ``collate_fn``."""
    dataset = loader.dataset
    return loader.collate_fn([dataset[i] for i in range(min(num_pairs, len(dataset)))])


def objective_without_grad(trainer: L.Trainer, module: L.LightningModule, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
    """``module.forward_objective(batch)`` in eval mode, without gradient, at the trainer's precision.

    Runs a copy of the objective, so that stateful scorers (the random control's generator) draw the same stream in
    training with or without this call; the module's mode and objective are restored.
    """
    was_training, objective = module.training, module.objective
    module.eval()
    module.objective = copy.deepcopy(objective)
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            return module.forward_objective(module.transfer_batch_to_device(batch, module.device, dataloader_idx=0))
    finally:
        module.objective = objective
        module.train(was_training)


class SelectionPictures(L.Callback):
    """Pictures of which tokens a selective objective keeps, at fit start and at fit end.

    For the first ``num_pairs`` validation pairs, renders every response token shaded by its score, the kept tokens
    marked, and the oracle's decisive tokens outlined where the data has them (``selalign.pictures``). Writes
    ``<output_dir>/selection_start.html`` and ``selection_end.html``, and logs each as ``wandb.Html``
    (``pictures/selection_start``, ``pictures/selection_end``) when a WandbLogger is attached. Objectives that select
    no tokens (DPO, SFT, distillation) get no pictures. Needs the trainer's datamodule to have a ``tokenizer``.
    """

    def __init__(self, output_dir: str, num_pairs: int = 8):
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        self.output_dir, self.num_pairs = Path(output_dir), num_pairs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer, pl_module, "start")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer, pl_module, "end")

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        datamodule = trainer.datamodule
        batch = first_pairs(datamodule.val_dataloader(), self.num_pairs)
        output = objective_without_grad(trainer, pl_module, batch)  # every rank: sharded models forward together
        if output.selected is None:
            log.info("%s selects no tokens: no selection pictures", type(pl_module.objective).__name__)
            return
        if not trainer.is_global_zero:
            return
        name = f"selection_{when}"
        page = selection_html(pair_pictures(batch, output.selected, output.token_scores, datamodule.tokenizer), f"Token selection at fit {when} (step {trainer.global_step})")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{name}.html").write_text(page, encoding="utf-8")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.log_metrics({f"pictures/{name}": wandb.Html(page)}, step=trainer.global_step)


class WandbSyncCommand(L.Callback):
    """At fit end, logs the ``wandb sync <run dir>`` command that uploads each offline wandb run."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.experiment.offline:
                log.info("offline wandb run; upload it with: wandb sync %s", Path(logger.experiment.settings.sync_dir).resolve())


class TrainTokensPerSecond(L.Callback):
    """Logs ``time/train_tokens_per_second``: the non-padding tokens of the train batches (chosen and rejected rows,
    prompts included) of all ranks, per second of training since this fit started (resumed runs count from the
    restart). The last value, in the run's metrics and summary, is the run's average."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.tokens = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self.tokens += int(batch["attention_mask"].sum())
        rate = torch.tensor(self.tokens / max(time.perf_counter() - self.started, 1e-9), device=pl_module.device)
        pl_module.log("time/train_tokens_per_second", rate, on_step=True, on_epoch=False, reduce_fx="sum", sync_dist=trainer.world_size > 1, batch_size=1)


class LearningCurve(L.Callback):
    """``curve.jsonl``: the policy measured every ``every_n_steps`` optimizer steps, and before the first and after the last.

    A point holds the gold evaluation's cheap measures (``GoldEvaluation.curve_point``: the setting's knowledge probe,
    the gold scorer on the first ``n_prompts`` held-out prompts, the KL to the start) and, for token-selective
    objectives on data that marks decisive tokens, ``selection/auroc`` over the first ``num_pairs`` validation pairs.
    ``step`` is the optimizer step; ``seconds`` the training job's wall-clock up to it since it started (models loaded,
    reference log-probs cached or run live, every step), the curve's own measuring excluded: what reaching a score cost.
    Points are appended to ``<output_dir>/curve.jsonl`` and logged as ``curve/<name>``. Measured on rank 0 with the
    whole policy in memory (not for sharded policies).

    Args:
        evaluation: the run's benchmark config (``${benchmark}``; instantiated at fit start); its ``every_n_steps``
            (None: no curve) and ``curve_prompts`` set the points; a benchmark without ``curve_point`` has no curve.
        start_model: the policy's starting model config (``${model}``), loaded at fit start for the KL to the start.
        output_dir: the run dir. seed: the sampling seed of every point (the same answers' seeds at every step).
        num_pairs: validation pairs of the AUROC.
    """

    def __init__(self, evaluation: Any, start_model: Any, output_dir: str, seed: int = 0, num_pairs: int = 64):
        self.evaluation_cfg, self.start_model_cfg = evaluation, start_model
        self.every_n_steps = (evaluation or {}).get("every_n_steps")
        self.n_prompts = (evaluation or {}).get("curve_prompts", 64)
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ValueError(f"benchmark.every_n_steps must be >= 1 or null, got {self.every_n_steps}")
        self.path, self.seed, self.num_pairs = Path(output_dir) / "curve.jsonl", seed, num_pairs
        self.run_started, self.measuring, self.last_step = time.perf_counter(), 0.0, None
        self.evaluation = self.start_model = None

    def on_run_start(self, started: float) -> None:
        """The training job's start (``time.perf_counter()``), given by ``selalign.train``: seconds count from there."""
        self.run_started = started

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps is None or not trainer.is_global_zero:
            return
        import hydra

        from selalign.models import freeze

        evaluation = hydra.utils.instantiate(self.evaluation_cfg)
        if not hasattr(evaluation, "curve_point"):
            log.info("benchmark %s has no curve points: no learning curve", type(evaluation).__name__)
            self.every_n_steps = None
            return
        self.evaluation = evaluation
        if self.start_model_cfg is not None:
            self.start_model = freeze(hydra.utils.instantiate(self.start_model_cfg)).to(pl_module.device)
        self.measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.evaluation is not None and trainer.global_step % self.every_n_steps == 0 and trainer.global_step != self.last_step:
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.evaluation is not None and trainer.global_step != self.last_step:
            self.measure(trainer, pl_module)
        self.start_model = None

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        from selalign.module import oracle_metrics

        started = time.perf_counter()
        point = {"step": trainer.global_step, "seconds": started - self.run_started - self.measuring}
        policy, tokenizer = pl_module.policy, trainer.datamodule.tokenizer
        was_training = policy.training
        try:
            point |= self.evaluation.curve_point(policy, tokenizer, self.start_model, self.n_prompts, self.seed)
        finally:
            policy.train(was_training)
        batch = first_pairs(trainer.datamodule.val_dataloader(), self.num_pairs)
        output = objective_without_grad(trainer, pl_module, batch)
        if "decisive_mask" in batch and output.token_scores is not None:
            point |= {name: float(value) for name, value in oracle_metrics(output, batch).items() if name.startswith("selection/auroc")}
        point |= {f"val/{name}": float(output.metrics[name]) for name in ("rewards_all/accuracies", "rewards/accuracies") if name in output.metrics}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(point) + "\n")
        for logger in trainer.loggers:
            logger.log_metrics({f"curve/{name}": value for name, value in point.items() if name != "step"}, step=trainer.global_step)
        self.last_step = trainer.global_step
        self.measuring += time.perf_counter() - started
        return point
