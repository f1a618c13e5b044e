"""Held-out preference accuracy of the implicit reward: no generation and no judge.

DPO's implicit reward of a response is beta * (log pi(y|x) - log pi_ref(y|x)), log-probs summed over the response
tokens. Over the validation pairs of ``ctx.datamodule``, ``pref_accuracy/accuracy`` is the share of pairs whose
chosen response has the larger log-ratio (ties count as wrong; beta > 0 does not change it) and
``pref_accuracy/margin`` the mean of log-ratio(chosen) - log-ratio(rejected), without beta.

The reference is loaded from ``ctx.ref_model_cfg``, unless the batches carry cached reference log-probs
(training with ``ref_cache=true``), which are used instead.
"""

from __future__ import annotations

import hydra
import torch

from selalign.benchmarks.base import EvalContext
from selalign.logprobs import model_label_logprobs
from selalign.models import check_embedding_covers, freeze


def response_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[rows] sum of the model's log-probs of each row's response tokens."""
    logps = model_label_logprobs(model, batch["input_ids"], batch["attention_mask"])
    return (logps * batch["response_mask"]).sum(dim=-1)


class PrefAccuracy:
    """Preference accuracy over the first ``limit`` validation pairs (all when None), batched as the datamodule's
    ``val_dataloader`` (``data.eval_batch_size``)."""

    name = "pref_accuracy"

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.limit = limit

    def _reference(self, ctx: EvalContext) -> torch.nn.Module:
        if ctx.ref_model_cfg is None:
            raise ValueError("pref_accuracy needs a reference model: set ref_model (e.g. ref_model=hub ref_model.name_or_path=<the starting model>)")
        reference = freeze(hydra.utils.instantiate(ctx.ref_model_cfg)).to(ctx.policy.device)
        check_embedding_covers(reference, ctx.tokenizer, ctx.ref_model_cfg.name_or_path, "reference")
        return reference

    @torch.no_grad()
    def margins(self, ctx: EvalContext) -> torch.Tensor:
        """[pairs] log-ratio(chosen) - log-ratio(rejected), in validation order."""
        if ctx.datamodule is None:
            raise ValueError("pref_accuracy needs preference pairs: add data=files data.path=<pairs file> (or data=hub data.name=<dataset>)")
        policy, reference, margins, pairs = ctx.policy, None, [], 0
        was_training = policy.training
        policy.eval()
        try:
            for batch in ctx.datamodule.val_dataloader():
                batch = {key: value.to(policy.device) for key, value in batch.items() if torch.is_tensor(value)}
                if "ref_logps" in batch:
                    reference_logps = batch["ref_logps"].sum(dim=-1)
                else:
                    reference = self._reference(ctx) if reference is None else reference
                    reference_logps = response_logps(reference, batch)
                log_ratios = (response_logps(policy, batch) - reference_logps).float().cpu()
                half = len(log_ratios) // 2
                margins.append(log_ratios[:half] - log_ratios[half:])
                pairs += half
                if self.limit is not None and pairs >= self.limit:
                    break
        finally:
            policy.train(was_training)
        return torch.cat(margins)[: self.limit]

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        margins = self.margins(ctx)
        return {
            f"{self.name}/accuracy": (margins > 0).float().mean().item(),
            f"{self.name}/margin": margins.mean().item(),
            f"{self.name}/num_pairs": float(len(margins)),
        }
