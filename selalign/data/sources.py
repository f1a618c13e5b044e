"""Where preference rows come from: local files or a Hugging Face hub dataset (one datamodule class each).

Every split carries, per row, its place in the source (``ROW``), so that a bad row is named as its user finds it:
the line of a JSON Lines file, else the row's number in the file or dataset split.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from selalign.data.datamodule import ROW, PreferenceDataModule, RowSource

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataFileError(ValueError):
    """A data file that cannot be read as rows; the message names the file and, where it can, the line."""


def numbered(rows: datasets.Dataset) -> datasets.Dataset:
    """``rows`` with the ``ROW`` column: each row's place in its source, kept through shuffles and splits."""
    return rows.add_column(ROW, list(range(len(rows))))


def split_off_validation(train: datasets.Dataset, validation_fraction: float, seed: int) -> datasets.DatasetDict:
    """A seeded share of ``train`` held out as the validation split."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"data.validation_fraction must be in (0, 1) when no validation split is given, got {validation_fraction}")
    parts = train.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return datasets.DatasetDict(train=parts["train"], validation=parts["test"])


def utf8_problem(file: Path) -> str | None:
    """The first bytes of ``file`` that are not UTF-8 text, by line and column, or None. Pyarrow reads such bytes
    without complaint and fails only when the row is read, naming neither file nor line."""
    with open(file, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {number}, column {error.start + 1}: byte 0x{line[error.start]:02x} is not UTF-8 text; save the file as UTF-8"
    return None


def holds_no_json_rows(file: Path) -> bool:
    return file.stat().st_size < 4096 and file.read_bytes().strip() in (b"", b"[]", b"{}")


def json_problem(file: Path) -> str | None:
    """What makes a UTF-8 .json/.jsonl file unreadable as rows, with its line (and column), or None."""
    text = file.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # one JSON document: an array of rows
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
        return None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if i == last and not text.endswith("\n"):
                return f"line {i + 1}: the last line is cut off (not complete JSON: {error.msg}); was the file still being written?"
            return f"line {i + 1}: not valid JSON ({error.msg}, column {error.colno})"
        if not isinstance(row, dict):
            return f"line {i + 1}: a row must be a JSON object with prompt, chosen and rejected, got {type(row).__name__}"
    return None


def load_file(path: str) -> tuple[datasets.Dataset, RowSource]:
    """The rows of a local json/jsonl/parquet file, numbered (``ROW``), and how to name them."""
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"data file {str(file)!r} does not exist")
    fmt = FILE_FORMATS.get(file.suffix)
    if fmt is None:
        raise ValueError(f"data file {str(file)!r}: unsupported extension {file.suffix!r}; use one of {sorted(FILE_FORMATS)}")
    if fmt == "json":
        if holds_no_json_rows(file):
            raise DataFileError(f"data file {str(file)!r} holds no rows")
        if problem := utf8_problem(file):
            raise DataFileError(f"data file {str(file)!r}, {problem}")
    try:
        rows = datasets.load_dataset(fmt, data_files=str(file), split="train")
    except Exception as error:  # the readers name neither the file nor the line: find what is wrong ourselves
        problem = json_problem(file) if fmt == "json" else None
        cause = error.__cause__ or error
        raise DataFileError(f"data file {str(file)!r}, {problem}" if problem else f"data file {str(file)!r} cannot be read as {fmt}: {type(cause).__name__}: {cause}") from error
    if len(rows) == 0:
        raise DataFileError(f"data file {str(file)!r} holds no rows")
    if fmt == "parquet":
        source = RowSource(str(path))
    elif file.read_bytes()[:4096].lstrip().startswith(b"["):
        source = RowSource(str(path), rows_of="the JSON array")
    else:
        source = RowSource(str(path), lines_of=file.resolve())
    return numbered(rows), source


class FilesDataModule(PreferenceDataModule):
    """Rows from a local json/jsonl/parquet file; validation from its own file or a seeded share of the train file."""

    def __init__(self, path: str, validation_path: str | None = None, validation_fraction: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.path, self.validation_path = path, validation_path
        self.validation_fraction = validation_fraction

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, RowSource]]:
        train, source = load_file(self.path)
        if self.validation_path:
            validation, validation_source = load_file(self.validation_path)
            return datasets.DatasetDict(train=train, validation=validation), {"train": source, "validation": validation_source}
        return split_off_validation(train, self.validation_fraction, self.seed), {"train": source, "validation": source}


class HubDataModule(PreferenceDataModule):
    """Rows from a Hugging Face hub dataset (needs network), e.g. ``Skywork/Skywork-Reward-Preference-80K-v0.2``."""

    def __init__(self, name: str, subset: str | None = None, train_split: str = "train", validation_split: str | None = None,
                 validation_fraction: float = 0.05, revision: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.name, self.subset, self.revision = name, subset, revision
        self.train_split, self.validation_split = train_split, validation_split
        self.validation_fraction = validation_fraction

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, RowSource]]:
        def load(split: str) -> tuple[datasets.Dataset, RowSource]:
            rows = datasets.load_dataset(self.name, self.subset, split=split, revision=self.revision)
            return numbered(rows), RowSource(f"{self.name}[{split}]", is_file=False)

        train, source = load(self.train_split)
        if self.validation_split:
            validation, validation_source = load(self.validation_split)
            return datasets.DatasetDict(train=train, validation=validation), {"train": source, "validation": validation_source}
        return split_off_validation(train, self.validation_fraction, self.seed), {"train": source, "validation": source}
