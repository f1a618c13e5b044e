"""Where preference rows come from: local files or a Hugging Face hub dataset (one datamodule class each)."""

from __future__ import annotations

from pathlib import Path

import datasets

from selalign.data.datamodule import PreferenceDataModule

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def split_off_validation(train: datasets.Dataset, validation_fraction: float, seed: int) -> datasets.DatasetDict:
    """A seeded share of ``train`` held out as the validation split."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"data.validation_fraction must be in (0, 1) when no validation split is given, got {validation_fraction}")
    parts = train.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return datasets.DatasetDict(train=parts["train"], validation=parts["test"])


def load_file(path: str) -> datasets.Dataset:
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"data file {str(file)!r} does not exist")
    fmt = FILE_FORMATS.get(file.suffix)
    if fmt is None:
        raise ValueError(f"data file {str(file)!r}: unsupported extension {file.suffix!r}; use one of {sorted(FILE_FORMATS)}")
    return datasets.load_dataset(fmt, data_files=str(file), split="train")


class FilesDataModule(PreferenceDataModule):
    """Rows from a local json/jsonl/parquet file; validation from its own file or a seeded share of the train file."""

    def __init__(self, path: str, validation_path: str | None = None, validation_fraction: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.path, self.validation_path = path, validation_path
        self.validation_fraction = validation_fraction

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, str]]:
        train = load_file(self.path)
        if self.validation_path:
            splits = datasets.DatasetDict(train=train, validation=load_file(self.validation_path))
            return splits, {"train": str(self.path), "validation": str(self.validation_path)}
        splits = split_off_validation(train, self.validation_fraction, self.seed)
        return splits, {"train": f"{self.path} (train share)", "validation": f"{self.path} (validation share)"}


class HubDataModule(PreferenceDataModule):
    """Rows from a Hugging Face hub dataset (needs network), e.g. ``Skywork/Skywork-Reward-Preference-80K-v0.2``."""

    def __init__(self, name: str, subset: str | None = None, train_split: str = "train", validation_split: str | None = None,
                 validation_fraction: float = 0.05, revision: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.name, self.subset, self.revision = name, subset, revision
        self.train_split, self.validation_split = train_split, validation_split
        self.validation_fraction = validation_fraction

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, str]]:
        train = datasets.load_dataset(self.name, self.subset, split=self.train_split, revision=self.revision)
        if self.validation_split:
            validation = datasets.load_dataset(self.name, self.subset, split=self.validation_split, revision=self.revision)
            return datasets.DatasetDict(train=train, validation=validation), {"train": f"{self.name}[{self.train_split}]", "validation": f"{self.name}[{self.validation_split}]"}
        splits = split_off_validation(train, self.validation_fraction, self.seed)
        return splits, {"train": f"{self.name}[{self.train_split}] (train share)", "validation": f"{self.name}[{self.train_split}] (validation share)"}
