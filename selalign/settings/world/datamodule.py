"""Preference pairs of the synthetic world as a ``PreferenceDataModule``, with the oracle's decisive spans."""

from __future__ import annotations

import datasets

from selalign.data.datamodule import PreferenceDataModule
from selalign.settings.world.setting import WorldSetting

ROW_FIELDS = ("id", "prompt", "chosen", "rejected", "chosen_decisive", "rejected_decisive")
GROUP_FIELD = "rule"  # a pair's group (selection/auroc/<group>): what decides it, the value or a format rule


class WorldDataModule(PreferenceDataModule):
    """``train_pairs`` pairs on the world's train questions and ``validation_pairs`` on its validation questions.

    ``setting`` is the ``WorldSetting`` whose world the pairs come from (``data=world`` passes ``${setting}``).

    Rows carry ``id``, ``prompt``, ``chosen``, ``rejected`` and the decisive character spans of both responses
    (where the responses part), so every batch has a ``decisive_mask`` marking the tokens that decide the preference,
    and their ``group``: the rule that decides the pair (``value``, ``final_mark``, ``repeated_word``), so that the
    selection's AUROC is also reported per rule (``selection/auroc/<rule>``).
    Pair ``i`` of a split does not depend on how many pairs are asked for. Other arguments: ``PreferenceDataModule``.
    """

    def __init__(self, setting: WorldSetting, train_pairs: int = 4000, validation_pairs: int = 256, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(setting, WorldSetting):
            raise ValueError(f"data=world needs setting=world (or world_tiny); the run's setting is {type(setting).__name__}")
        if train_pairs < 1 or validation_pairs < 1:
            raise ValueError(f"data.train_pairs and data.validation_pairs must be >= 1, got {train_pairs} and {validation_pairs}")
        self.world, self.train_pairs, self.validation_pairs = setting.world, train_pairs, validation_pairs

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, str]]:
        sizes = {"train": self.train_pairs, "validation": self.validation_pairs}
        splits = datasets.DatasetDict({
            split: datasets.Dataset.from_list([{field: pair[field] for field in ROW_FIELDS} | {"group": pair[GROUP_FIELD]} for pair in self.world.preference_pairs(split, n)])
            for split, n in sizes.items()
        })
        names = {split: f"world {self.world.fingerprint} ({split} pairs)" for split in sizes}
        return splits, names
