"""Training objectives of the ``method`` config group: one file per method, each a pure loss plus a thin class."""

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput, TokenDistributions, TokenEvidence, check_number
from selalign.objectives.distill import DistillKD, DistillSKL, distill_loss, forward_kl_per_token, skew_kl_per_token
from selalign.objectives.dpo import DPO, dpo_loss
from selalign.objectives.dpo_kd import DPOKD, dpo_kd_loss
from selalign.objectives.ipo import IPO, ipo_loss
from selalign.objectives.robust_dpo import RobustDPO, robust_dpo_loss
from selalign.objectives.selective_dpo import SelectiveDPO, select_tokens, selective_dpo_loss
from selalign.objectives.sft import SFT, Untrained, chosen_nll
from selalign.objectives.simpo import SimPO, simpo_loss
from selalign.objectives.tdpo import TDPO, tdpo_loss
from selalign.objectives.tis_dpo import TISDPO, tis_dpo_loss, tis_weights

__all__ = [
    "DPO", "DPOKD", "IPO", "SFT", "TDPO", "TISDPO", "DistillKD", "DistillSKL", "Objective", "ObjectiveInputs", "ObjectiveOutput",
    "RobustDPO", "SelectiveDPO", "SimPO", "TokenDistributions", "TokenEvidence", "Untrained", "check_number", "chosen_nll",
    "distill_loss", "dpo_kd_loss", "dpo_loss", "forward_kl_per_token", "ipo_loss", "robust_dpo_loss", "select_tokens",
    "selective_dpo_loss", "simpo_loss", "skew_kl_per_token", "tdpo_loss", "tis_dpo_loss", "tis_weights",
]
