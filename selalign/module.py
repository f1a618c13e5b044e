"""PreferenceModule: the trainable policy, the frozen reference (and teacher) and an objective, on Lightning."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from transformers import PreTrainedModel

from selalign.checkpointing import restore_rng_states, rng_states
from selalign.logprobs import HeadStates, HiddenStateDistributions, LogitsDistributions, TokenLogps, fused_output_layer, token_logps
from selalign.models import freeze
from selalign.objectives import Objective, ObjectiveInputs, ObjectiveOutput
from selalign.data.collator import CACHED_LOGPS

log = logging.getLogger(__name__)


FROZEN_ROLES = ("reference", "teacher", "selector", "selector_base")


def frozen_roles(objective: Objective, has_selector: bool) -> dict[str, str]:
    """role -> rows ("all" or "chosen") each frozen model role is run on, from what ``objective`` reads.

    The reference anchors the loss (``needs_reference``) and selects tokens for scorers that read the selector
    unless a separate ``selector`` model is configured (``has_selector``); ``selector_base`` is run for scorers
    that read it; every role in ``objective.distributions`` is run on the rows it names.
    """
    needs, rows = objective.scorer_needs, {}
    if objective.needs_reference or ("selector" in needs and not has_selector):
        rows["reference"] = "all"
    if "selector" in needs and has_selector:
        rows["selector"] = "all"
    if "selector_base" in needs:
        rows["selector_base"] = "all"
    for role, role_rows in objective.distributions.items():
        if role != "policy":
            rows[role] = "all" if rows.get(role) == "all" or role_rows == "all" else role_rows
    return rows


class PreferenceModule(L.LightningModule):
    """Computes per-token log-probs of the policy and the frozen models, calls the objective, logs what it returns.

    The module does not know which method runs: everything method-specific lives in ``objective``, which
    declares what it reads (``needs_reference``, ``distributions``, its scorer's ``needs``). Frozen models are in
    eval mode without gradient, get no optimizer state and are left out of checkpoints. Each distinct frozen model
    runs once per step, whatever the roles it plays.

    Args:
        policy: the causal LM being trained.
        reference: the frozen reference that anchors the loss, or None when the objective needs none or batches
            carry cached reference log-probs (``ref_logps``, see ``selalign.refcache``).
        objective: a ``selalign.objectives.Objective``.
        optimizer: partial optimizer taking the parameters (``torch.optim.AdamW`` with ``_partial_``).
        scheduler: optional partial taking ``optimizer`` and ``num_training_steps``, stepped every step.
        teacher: the frozen teacher of distillation objectives (may be the reference object itself).
        selector: the model whose log-probs feed the token scorer; None: the reference selects.
        selector_base: the selector's own starting model, for implicit-reward scorers.
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
        selector: PreTrainedModel | None = None,
        selector_base: PreTrainedModel | None = None,
        vocab_size: int | None = None,
        max_consecutive_nonfinite: int = 3,
    ):
        super().__init__()
        if objective.needs_teacher and teacher is None:
            raise ValueError(f"{type(objective).__name__} needs a teacher model, but none was given")
        self.policy = policy.train()  # from_pretrained returns eval mode; Lightning keeps each module's mode
        self.reference = freeze(reference) if reference is not None else None
        self.teacher = freeze(teacher) if teacher is not None else None
        self.selector = freeze(selector) if selector is not None else None
        self.selector_base = freeze(selector_base) if selector_base is not None else None
        self.objective = objective
        # Output layers become FusedOutputLayers here, before any strategy shards the models. Divergences need the
        # models they compare in one form: fused only when all of them can fuse.
        fuses = {id(model): fused_output_layer(model) is not None for model in (policy, reference, teacher, selector, selector_base) if model is not None}
        compared = [policy] + [getattr(self, role) for role in objective.distributions if role != "policy"]
        self._distributions_fuse = all(fuses.get(id(model), False) for model in compared if model is not None)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.vocab_size = vocab_size
        # Checkpoints hold the policy only; loading them must not expect frozen weights.
        self.strict_loading = False
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.nonfinite_steps = self.consecutive_nonfinite = 0

    def forward_objective(self, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """One step's computation: the frozen models, then the policy, over the [chosen; rejected] sequences of
        ``batch`` (``selalign.logprobs.token_logps``: packed rows and fused output layers where the models allow it),
        then the objective. The frozen models run first, so that their activations are gone before the policy's
        are kept for the backward."""
        num_pairs = batch["input_ids"].shape[0] // 2
        distribution_roles = self.objective.distributions
        # A selector apart from the reference runs live, or its log-probs come cached (ref_cache=true: no model loaded).
        wanted = frozen_roles(self.objective, has_selector=self.selector is not None or CACHED_LOGPS["selector"] in batch)
        logps, distributions, rows_run = {}, {}, {}
        with torch.no_grad():
            results: dict[int, tuple[str, TokenLogps]] = {}  # one forward per distinct model: id -> (rows, result)
            for role, rows in wanted.items():
                cached = batch.get(CACHED_LOGPS.get(role, ""))
                if cached is not None and role not in distribution_roles:
                    logps[role] = cached
                    continue
                model = getattr(self, role)
                if model is None:
                    raise ValueError(f"{type(self.objective).__name__} reads the {role} model, but none was given (nor its cached log-probs)")
                sharing = [other for other in wanted if getattr(self, other) is model]
                if id(model) not in results:
                    model_rows = "all" if any(wanted[other] == "all" for other in sharing) else rows
                    keep = any(other in distribution_roles for other in sharing)
                    results[id(model)] = (model_rows, self._token_logps(model, batch, model_rows, keep))
                model_rows, result = results[id(model)]
                if role in distribution_roles:
                    distributions[role], rows_run[role] = result.states if result.states is not None else result.logits, model_rows
                if rows == "all" and role in ("reference", "selector", "selector_base"):
                    logps[role] = cached if cached is not None else result.logps
        policy = self._token_logps(self.policy, batch, "all", bool(distribution_roles))
        logps["policy"] = policy.logps
        if distribution_roles:
            distributions["policy"], rows_run["policy"] = policy.states if policy.states is not None else policy.logits, "all"
        return self.objective(ObjectiveInputs(
            policy_logps=logps["policy"],
            response_mask=batch["response_mask"],
            ref_logps=logps.get("reference"),
            selector_logps=logps.get("selector"),
            selector_base_logps=logps.get("selector_base"),
            decisive_mask=batch.get("decisive_mask"),
            distributions=self._distributions(distributions, rows_run, batch) if distribution_roles else None,
        ))

    def _token_logps(self, model, batch: dict, rows: str, keep_distributions: bool) -> TokenLogps:
        # Divergences need every model of the objective in one form: fused only if all of them can fuse.
        fused = not keep_distributions or self._distributions_fuse
        result = token_logps(model, batch, rows, self.vocab_size, keep_distributions, fused=fused)
        if model is not self.policy and hasattr(model, "reshard"):
            model.reshard()  # a frozen FSDP2 root keeps its gathered parameters after a forward without gradient
        return result

    def sharded_models(self) -> list[torch.nn.Module]:
        """The models a sharding strategy shards: the policy and each distinct frozen model (an adapter reference
        is the policy itself)."""
        models = [self.policy]
        for role in FROZEN_ROLES:
            model = getattr(self, role)
            if isinstance(model, torch.nn.Module) and all(model is not other for other in models):
                models.append(model)
        return models

    def configure_model(self) -> None:
        """Sharding strategies shard the models here, before the optimizer is made (``selalign.strategies``)."""
        shard = getattr(self.trainer.strategy, "shard_module", None)
        if shard is not None:
            shard(self)

    def _distributions(self, distributions: dict, rows_run: dict, batch: dict):
        if all(isinstance(value, HeadStates) for value in distributions.values()):
            mask = batch["response_mask"]
            vocab = self.vocab_size or min(states.weight.shape[0] for states in distributions.values())
            return HiddenStateDistributions(distributions, rows_run, batch["label_positions"] + 1, tuple(mask.shape), batch["num_chosen_labels"], vocab)
        return LogitsDistributions(distributions, batch["response_mask"])

    def release_frozen(self, roles: list[str]) -> None:
        """Drops the frozen models of ``roles`` (their log-probs are cached now), keeping any model that another role
        still runs."""
        kept = {id(getattr(self, role)) for role in FROZEN_ROLES if role not in roles and getattr(self, role) is not None}
        for role in roles:
            if id(getattr(self, role)) not in kept:
                log.info("%s model released: its log-probs are cached", role)
            setattr(self, role, None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        on_step = stage == "train"
        batch_size = batch["pair_index"].shape[0]
        metrics = output.metrics | oracle_metrics(output, batch)
        for name, value in metrics.items():
            # Epoch-level (validation) values are averaged across ranks; per-step values stay local (no extra sync).
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=not on_step, prog_bar=name == "loss", batch_size=batch_size, sync_dist=not on_step)

    def train(self, mode: bool = True) -> "PreferenceModule":
        super().train(mode)
        for frozen in (getattr(self, role) for role in FROZEN_ROLES):
            if isinstance(frozen, torch.nn.Module):
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
        optimizer = self.optimizer_factory([p for p in self.policy.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, num_training_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def oracle_metrics(output: ObjectiveOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Selection against the oracle, where the data marks the decisive tokens (synthetic settings).

    ``selection/precision``: share of selected tokens that are decisive; ``selection/recall``: share of decisive
    tokens selected; ``oracle/decisive_share``: share of response tokens that are decisive, the precision of
    keeping every token (plain DPO); ``selection/auroc``: ``token_auroc`` of the scores against the decisive mask,
    averaged over the rows that have both kinds of token (and per group of pairs, ``selection/auroc/<group>``, where the
    pairs carry one). At ratio 0.4 with 10% decisive tokens precision is capped at
    0.25 and moves with recall; AUROC compares scorers without a threshold.
    """
    decisive = batch.get("decisive_mask")
    if decisive is None:
        return {}
    metrics = {"oracle/decisive_share": decisive.sum() / batch["response_mask"].sum().clamp(min=1)}
    if output.selected is not None:
        hits = (output.selected & decisive).sum()
        metrics["selection/precision"] = hits / output.selected.sum().clamp(min=1)
        metrics["selection/recall"] = hits / decisive.sum().clamp(min=1)
    if output.token_scores is not None:
        auroc = token_auroc(output.token_scores, decisive, batch["response_mask"])
        if not auroc.isnan().all():
            metrics["selection/auroc"] = auroc.nanmean()
        groups = batch.get("pair_group")
        for group in sorted({g for g in groups or () if g is not None}):  # per kind of pair (the world's deciding rule)
            rows = torch.tensor([g == group for g in groups] * 2, device=auroc.device)
            if not auroc[rows].isnan().all():
                metrics[f"selection/auroc/{group}"] = auroc[rows].nanmean()
    return metrics


def token_auroc(scores: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor, max_elements: int = 2**24) -> torch.Tensor:
    """Per row, the area under the ROC curve of ``scores`` for telling ``positive`` tokens from the other ``mask`` tokens.

    Args:
        scores: [R, T] float. positive, mask: bool [R, T]; only positions in ``mask`` count.

    Returns:
        [R] float: P(s_p > s_n) + 0.5 P(s_p = s_n) over every (positive, negative) pair of the row (the Mann-Whitney
        statistic, ties counting half); NaN for a row without a positive or without a negative token. Computed
        exactly over all pairs, a chunk of rows at a time (at most ``max_elements`` comparisons at once).
    """
    scores, positive, mask = scores.float(), positive.bool() & mask.bool(), mask.bool()
    negative = mask & ~positive
    rows, length = scores.shape
    chunk = max(1, max_elements // max(1, length * length))
    values = []
    for start in range(0, rows, chunk):
        s, p, n = scores[start : start + chunk], positive[start : start + chunk], negative[start : start + chunk]
        wins = (s[:, :, None] > s[:, None, :]).float() + 0.5 * (s[:, :, None] == s[:, None, :]).float()
        pairs = p[:, :, None] & n[:, None, :]
        counted = pairs.sum(dim=(1, 2))
        values.append((wins * pairs).sum(dim=(1, 2)) / counted.where(counted > 0, torch.nan))
    return torch.cat(values)
