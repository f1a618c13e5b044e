"""Training objectives of the ``method`` config group: one file per method, each a pure loss plus a thin class."""

from selalign.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from selalign.objectives.dpo import DPO, dpo_loss
from selalign.objectives.selective_dpo import SelectiveDPO, selective_dpo_loss

__all__ = ["DPO", "Objective", "ObjectiveInputs", "ObjectiveOutput", "SelectiveDPO", "dpo_loss", "selective_dpo_loss"]
