"""PreferenceModule: the trainable policy, the frozen reference (and teacher) and an objective, on Lightning."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from transformers import PreTrainedModel

from selalign.checkpointing import restore_rng_states, rng_states
from selalign.logprobs import label_logprobs, model_label_logprobs
from selalign.models import freeze
from selalign.objectives import Objective, ObjectiveInputs, ObjectiveOutput

log = logging.getLogger(__name__)


class PreferenceModule(L.LightningModule):
    """Computes per-token log-probs of policy and reference, calls the objective, logs what it returns.

    The module does not know which method runs: everything method-specific lives in ``objective``, which
    declares what it needs (``needs_reference``, ``needs_teacher``). Frozen models (reference, teacher) are
    in eval mode without gradient, get no optimizer state and are left out of checkpoints.

    Args:
        policy: the causal LM being trained.
        reference: the frozen reference, or None when the objective needs none or batches carry cached
            reference log-probs (``ref_logps``, see ``selalign.refcache``).
        objective: a ``selalign.objectives.Objective``.
        optimizer: partial optimizer taking the parameters (``torch.optim.AdamW`` with ``_partial_``).
        scheduler: optional partial taking ``optimizer`` and ``num_training_steps``, stepped every step.
        teacher: the frozen teacher of distillation objectives (may be the reference object itself).
        vocab_size: the tokenizer's size; full-vocabulary logits are cut to it (models may pad their output layer).
        max_consecutive_nonfinite: a step with a non-finite loss is skipped (no update) and counted; this many in a
            row stop the run with an error naming the offending pairs.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        reference: PreTrainedModel | None,
        objective: Objective,
        optimizer: Callable,
        scheduler: Callable | None = None,
        teacher: PreTrainedModel | None = None,
        vocab_size: int | None = None,
        max_consecutive_nonfinite: int = 3,
    ):
        super().__init__()
        if objective.needs_teacher and teacher is None:
            raise ValueError(f"{type(objective).__name__} needs a teacher model, but none was given")
        self.policy = policy.train()  # from_pretrained returns eval mode; Lightning keeps each module's mode
        self.reference = freeze(reference) if reference is not None else None
        self.teacher = freeze(teacher) if teacher is not None else None
        self.objective = objective
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.vocab_size = vocab_size
        # Checkpoints hold the policy only; loading them must not expect reference or teacher weights.
        self.strict_loading = False
        self.last_output: ObjectiveOutput | None = None
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.nonfinite_steps = self.consecutive_nonfinite = 0

    def forward_objective(self, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """One step's computation: policy (reference, teacher) over the [chosen; rejected] rows, then the objective."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        num_pairs = input_ids.shape[0] // 2
        policy_logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[..., : self.vocab_size]
        policy_logps = label_logprobs(policy_logits, input_ids)
        ref_logps, teacher_logits = batch.get("ref_logps"), None
        with torch.no_grad():
            if self.objective.needs_teacher and self.teacher is self.reference and ref_logps is None:
                # Teacher = reference: one forward serves both the reference log-probs and the teacher's distributions.
                ref_logits = self.reference(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[..., : self.vocab_size]
                ref_logps, teacher_logits = label_logprobs(ref_logits, input_ids), ref_logits[:num_pairs]
            elif self.objective.needs_teacher:
                teacher_logits = self.teacher(input_ids=input_ids[:num_pairs], attention_mask=attention_mask[:num_pairs], use_cache=False).logits[..., : self.vocab_size]
            if self.objective.needs_reference and ref_logps is None:
                if self.reference is None:
                    raise ValueError(f"{type(self.objective).__name__} needs a reference model or cached reference log-probs")
                ref_logps = model_label_logprobs(self.reference, input_ids, attention_mask)
        return self.objective(ObjectiveInputs(
            policy_logps=policy_logps,
            response_mask=batch["response_mask"],
            ref_logps=ref_logps,
            policy_logits=policy_logits if self.objective.needs_teacher else None,
            teacher_logits=teacher_logits,
        ))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        output = self.forward_objective(batch)
        if not torch.isfinite(output.loss):  # one scalar check per step; skipping a bad update is worth it
            return self._skip_nonfinite(output, batch)
        self.consecutive_nonfinite = 0
        self._log_metrics("train", output, batch)
        return output.loss

    def _skip_nonfinite(self, output: ObjectiveOutput, batch: dict) -> None:
        """Count the step, name the pairs whose loss is not finite, and stop after too many bad steps in a row."""
        self.nonfinite_steps += 1
        self.consecutive_nonfinite += 1
        offending = [pair_id for pair_id, finite in zip(batch["pair_id"], torch.isfinite(output.losses).tolist()) if not finite]
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True, batch_size=len(batch["pair_id"]))
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"non-finite loss in {self.consecutive_nonfinite} consecutive steps (step {self.global_step}); "
                f"offending pairs in the last batch: {offending}"
            )
        log.warning("step %d: non-finite loss, update skipped (pairs %s)", self.global_step, offending)
        return None

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        output = self.forward_objective(batch)
        self._log_metrics("val", output, batch)

    def _log_metrics(self, stage: str, output: ObjectiveOutput, batch: dict[str, torch.Tensor]) -> None:
        self.last_output = output
        on_step = stage == "train"
        batch_size = batch["pair_index"].shape[0]
        metrics = output.metrics | oracle_metrics(output, batch)
        for name, value in metrics.items():
            # Epoch-level (validation) values are averaged across ranks; per-step values stay local (no extra sync).
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=not on_step, prog_bar=name == "loss", batch_size=batch_size, sync_dist=not on_step)

    def train(self, mode: bool = True) -> "PreferenceModule":
        super().train(mode)
        for frozen in (self.reference, self.teacher):
            if frozen is not None:
                frozen.eval()  # Lightning switches the module to train mode; frozen models stay in eval
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
        checkpoint["rng_states"] = rng_states()
        checkpoint["objective_state"] = self.objective.state_dict()
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_rng_states(checkpoint["rng_states"])
        self.objective.load_state_dict(checkpoint["objective_state"])
        self.nonfinite_steps = checkpoint["nonfinite_steps"]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.policy.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, num_training_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def oracle_metrics(output: ObjectiveOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Selection against the oracle, where the data marks the decisive tokens (synthetic settings).

    ``selection/precision``: share of selected tokens that are decisive; ``selection/recall``: share of decisive
    tokens selected; ``oracle/decisive_share``: share of response tokens that are decisive, the precision of
    keeping every token (plain DPO).
    """
    decisive = batch.get("decisive_mask")
    if decisive is None:
        return {}
    metrics = {"oracle/decisive_share": decisive.sum() / batch["response_mask"].sum().clamp(min=1)}
    if output.selected is not None:
        hits = (output.selected & decisive).sum()
        metrics["selection/precision"] = hits / output.selected.sum().clamp(min=1)
        metrics["selection/recall"] = hits / decisive.sum().clamp(min=1)
    return metrics
