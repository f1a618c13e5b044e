"""PreferenceModule: the trainable policy, the frozen reference and an objective, on Lightning."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from transformers import PreTrainedModel

from selalign.logprobs import model_label_logprobs
from selalign.models import freeze
from selalign.objectives import Objective, ObjectiveInputs, ObjectiveOutput


class PreferenceModule(L.LightningModule):
    """Computes per-token log-probs of policy and reference, calls the objective, logs what it returns.

    The module does not know which method runs: everything method-specific lives in ``objective``.
    The reference is frozen (eval mode, no grad), gets no optimizer state and is left out of checkpoints.

    Args:
        policy: the causal LM being trained.
        reference: the frozen reference (None when the objective needs none).
        objective: a ``selalign.objectives.Objective``.
        optimizer: partial optimizer taking the parameters (``torch.optim.AdamW`` with ``_partial_``).
        scheduler: optional partial taking ``optimizer`` and ``num_training_steps``, stepped every step.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        reference: PreTrainedModel | None,
        objective: Objective,
        optimizer: Callable,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        if objective.needs_reference and reference is None:
            raise ValueError(f"{type(objective).__name__} needs a reference model, but none was given")
        self.policy = policy
        self.reference = freeze(reference) if reference is not None else None
        self.objective = objective
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Checkpoints hold the policy only; loading them must not expect reference weights.
        self.strict_loading = False
        self.last_output: ObjectiveOutput | None = None

    def forward_objective(self, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """One step's computation: policy (and reference) log-probs over [chosen; rejected] rows, then the objective."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        policy_logps = model_label_logprobs(self.policy, input_ids, attention_mask)
        ref_logps = None
        if self.objective.needs_reference:
            with torch.no_grad():
                ref_logps = model_label_logprobs(self.reference, input_ids, attention_mask)
        return self.objective(ObjectiveInputs(policy_logps=policy_logps, response_mask=batch["response_mask"], ref_logps=ref_logps))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = self.forward_objective(batch)
        self._log_metrics("train", output, batch)
        return output.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        output = self.forward_objective(batch)
        self._log_metrics("val", output, batch)

    def _log_metrics(self, stage: str, output: ObjectiveOutput, batch: dict[str, torch.Tensor]) -> None:
        self.last_output = output
        on_step = stage == "train"
        batch_size = batch["pair_index"].shape[0]
        for name, value in output.metrics.items():
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=not on_step, prog_bar=name == "loss", batch_size=batch_size)

    def train(self, mode: bool = True) -> "PreferenceModule":
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # Lightning switches the module to train mode; the reference stays in eval
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("reference.")}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.policy.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, num_training_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
