"""Experiment loggers that never wait on the network."""

from __future__ import annotations

import netrc
import os

from lightning.pytorch.loggers import WandbLogger


def wandb_account_configured() -> bool:
    """True when wandb has credentials: WANDB_API_KEY or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(**kwargs) -> WandbLogger:
    """A WandbLogger, offline unless WANDB_MODE says otherwise or a wandb account is configured.

    Offline runs are written under ``save_dir`` and uploaded later with ``wandb sync``.
    """
    mode = os.environ.get("WANDB_MODE")
    offline = mode in ("offline", "dryrun") if mode else not wandb_account_configured()
    return WandbLogger(offline=offline, **kwargs)
