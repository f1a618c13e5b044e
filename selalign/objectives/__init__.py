"""Training objectives of the ``method`` config group: one file per method, each a pure loss plus a thin class."""

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, TokenDistributions, TokenEvidence, check_number
from selalign.objectives.distill import DistillKD, DistillSKL, distill_loss, forward_kl_per_token, skew_kl_per_token
from selalign.objectives.dpo import DPO, dpo_loss
from selalign.objectives.dpo_kd import DPOKD, dpo_kd_loss
from selalign.objectives.selective_dpo import SelectiveDPO, select_tokens, selective_dpo_loss
from selalign.objectives.sft import SFT, Untrained, chosen_nll

__all__ = [
    "DPO", "DPOKD", "SFT", "DistillKD", "DistillSKL", "Objective", "ObjectiveInputs", "ObjectiveOutput", "SelectiveDPO",
    "TokenDistributions", "TokenEvidence", "Untrained", "check_number", "chosen_nll", "distill_loss", "dpo_kd_loss", "dpo_loss",
    "forward_kl_per_token", "select_tokens", "selective_dpo_loss", "skew_kl_per_token",
]
