"""Training objectives of the ``method`` config group: one file per method, each a pure loss plus a thin class."""

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from selalign.objectives.distill import DistillKD, DistillSKL, distill_kd_loss, distill_skl_loss, forward_kl_per_token, skew_kl_per_token
from selalign.objectives.dpo import DPO, dpo_loss
from selalign.objectives.dpo_kd import DPOKD, dpo_kd_loss
from selalign.objectives.selective_dpo import SelectiveDPO, selective_dpo_loss
from selalign.objectives.sft import SFT, chosen_nll

__all__ = [
    "DPO", "DPOKD", "SFT", "DistillKD", "DistillSKL", "Objective", "ObjectiveInputs", "ObjectiveOutput", "SelectiveDPO",
    "chosen_nll", "distill_kd_loss", "distill_skl_loss", "dpo_kd_loss", "dpo_loss", "forward_kl_per_token",
    "selective_dpo_loss", "skew_kl_per_token",
]
