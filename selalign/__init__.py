"""selalign: token-selective preference optimization (Selective-DPO) on Lightning and Hydra."""

__version__ = "0.1.0"
