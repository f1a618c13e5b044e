"""Experiment loggers that never wait on the network, and the names, groups and tags of runs.

A run's name, tags and group are pure functions of its Hydra choices (``HydraConfig.get().runtime.choices``) and
its resolved config, so that every run of a sweep is found on the dashboard by what it varied.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from lightning.pytorch.loggers import WandbLogger

SECRET_WORDS = {"token", "secret", "password", "passwd", "apikey"}
DEPENDENCIES = r"(torch|torchdata|lightning|transformers|datasets|huggingface_hub|wandb|hydra|omegaconf|peft|pydantic|pyarrow)(\.|$)"


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def silence_known_noise() -> None:
    """Silence third-party messages that say nothing about the run: Lightning's tips, deprecation warnings raised
    inside dependencies, Lightning's "modules in eval mode" warning (the frozen reference and teacher are in eval mode
    by design; the policy is put in train mode) and its "dirpath has changed" warning on resume (``resume=auto``
    always continues into a new run dir). Safe to call more than once."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _DropLightningTips) for existing in tips.filters):
        tips.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=DEPENDENCIES)
    warnings.filterwarnings("ignore", category=FutureWarning, module=DEPENDENCIES)
    warnings.filterwarnings("ignore", message=r"(?s).*\bdeprecated\b", module=DEPENDENCIES)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")
MASK = "***"


def wandb_account_configured() -> bool:
    """True when wandb has credentials: WANDB_API_KEY or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def is_secret_key(key: str) -> bool:
    """True for config keys that may hold a credential: ``api_key``, ``hf_token``, ``client_secret``, ``db_password``.

    Words are split on ``_``, ``-``, ``.`` and case changes, so counts such as ``max_new_tokens`` stay visible.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower().replace("api_key", "apikey")
    return bool(SECRET_WORDS & set(re.split(r"[_\-.\s]+", spaced)))


def without_secrets(node: Any) -> Any:
    """A copy of a nested dict/list config with the value of every secret-looking key (``is_secret_key``) masked."""
    if isinstance(node, Mapping):
        return {key: MASK if is_secret_key(str(key)) else without_secrets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [without_secrets(value) for value in node]
    return node


def method_label(cfg: DictConfig) -> str:
    """The method as it ran, from the resolved objective and scorer, never from the choices that led there.

    The objective's ``name`` (``dpo``, ``selective_dpo``, ...), followed by ``_<scorer>`` when its scorer is not the
    paper's ``logp_diff``: ``selective_dpo_random``, ``selective_dpo_oracle``. An evaluation job (no method) is ``evaluate``.
    """
    if not cfg.get("method"):
        return "evaluate"
    objective = hydra.utils.get_class(cfg.method._target_)
    label = objective.name or objective.__name__
    scorer = cfg.method.get("scorer")
    if scorer:
        scorer_name = hydra.utils.get_class(scorer._target_).name
        label += "" if scorer_name == "logp_diff" else f"_{scorer_name}"
    return label


def model_label(choice: str | None, model_cfg: DictConfig) -> str:
    """A model config's group choice, or the last part of its ``name_or_path`` for the generic ``hub`` config (or no choice)."""
    return choice if choice and choice != "hub" else Path(str(model_cfg.name_or_path)).name


def reference_label(choices: Mapping[str, str], cfg: DictConfig) -> str:
    """The reference's label, or ``none`` for an objective that loads no reference (``reads_reference``)."""
    if cfg.get("method") and not reads_reference(cfg.method):
        return "none"
    return model_label(choices.get("ref_model"), cfg.ref_model)


def reads_reference(method_cfg: DictConfig) -> bool:
    """Whether the objective of ``method_cfg`` loads the reference config: to anchor its loss (``needs_reference``), as
    a frozen model whose distributions it reads (a teacher defaults to the reference), or to feed a token scorer.
    SimPO, SFT and the untrained start read none, so their runs are not named after a model they never load."""
    objective = hydra.utils.get_class(method_cfg._target_)
    return bool(objective.needs_reference or set(objective.distributions) - {"policy"} or method_cfg.get("scorer") is not None)


def selector_label(choices: Mapping[str, str], cfg: DictConfig) -> str | None:
    """The selector model's label when one is set apart from the reference, else None."""
    return model_label(choices.get("selector_model"), cfg.selector_model) if cfg.get("selector_model") else None


def selection_ratio(cfg: DictConfig) -> float | None:
    """The share of kept tokens for token-selective methods (a method config with ``ratio``); None for the others."""
    return float(cfg.method.ratio) if cfg.get("method") and "ratio" in cfg.method else None


def run_name(choices: Mapping[str, str], cfg: DictConfig) -> str:
    """``<method>[-r<ratio>]-ref=<reference>[-sel=<selector>]-s<seed>``, e.g. ``selective_dpo-r0.4-ref=world_large_dpo-s1``.

    The ratio appears for token-selective methods, the selector when one is set apart from the reference.
    """
    if not cfg.get("method"):  # an evaluation job: the model it evaluated
        return f"evaluate={model_label(choices.get('model'), cfg.model)}-s{cfg.seed}"
    ratio, selector = selection_ratio(cfg), selector_label(choices, cfg)
    parts = [method_label(cfg), *([f"r{ratio:g}"] if ratio is not None else []), f"ref={reference_label(choices, cfg)}"]
    return "-".join([*parts, *([f"sel={selector}"] if selector else []), f"s{cfg.seed}"])


def run_tags(choices: Mapping[str, str], cfg: DictConfig) -> list[str]:
    """``method=<method>``, ``ratio=<ratio>`` (token-selective methods only), ``ref=<reference>``, ``sel=<selector>`` (if set)."""
    ratio, selector = selection_ratio(cfg), selector_label(choices, cfg)
    return [f"method={method_label(cfg)}", *([f"ratio={ratio:g}"] if ratio is not None else []), f"ref={reference_label(choices, cfg)}", *([f"sel={selector}"] if selector else [])]


def sweep_group(choices: Mapping[str, str], sweep_dir: str | None) -> str | None:
    """One group per sweep: ``<experiment>-<sweep dir name>`` (the dir name alone without an experiment); None for single runs."""
    if sweep_dir is None:
        return None
    return "-".join(filter(None, [choices.get("experiment"), Path(sweep_dir).name]))


def hydra_run_context() -> tuple[dict[str, str], str | None]:
    """(the Hydra choices, the sweep dir in multirun mode else None); ({}, None) outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}, None
    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    return dict(hydra_cfg.runtime.choices), sweep_dir


def wandb_logger(run_config: str | None = None, **kwargs) -> WandbLogger:
    """A WandbLogger, offline unless WANDB_MODE says otherwise or a wandb account is configured.

    ``run_config``: the run's resolved config file (``config.yaml``, written by ``selalign.train`` before any logger
    is built). When given, the run gets a name, tags and a group (``run_name``, ``run_tags``, ``sweep_group``)
    unless ``kwargs`` set them, and the config is logged without secrets. A run still open in this process (the
    previous job of a sweep) is finished first, so that every job gets its own run.

    Offline runs are written under ``save_dir`` and uploaded later with ``wandb sync``.
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE")
    offline = mode in ("offline", "dryrun") if mode else not wandb_account_configured()
    if run_config is not None:
        cfg = OmegaConf.load(run_config)
        choices, sweep_dir = hydra_run_context()
        kwargs = {
            "name": run_name(choices, cfg),
            "tags": run_tags(choices, cfg),
            "group": sweep_group(choices, sweep_dir),
            "config": without_secrets(OmegaConf.to_container(cfg)),
        } | {key: value for key, value in kwargs.items() if value is not None}
    if wandb.run is not None:
        wandb.finish()
    logger = WandbLogger(offline=offline, **kwargs)
    # Lightning always passes wandb's deprecated `anonymous` setting, which makes wandb warn on every run.
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def finish_wandb_run() -> None:
    """Close this process's wandb run, if one is open, so that its files are complete when the job ends."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
