"""LightningDataModule of preference pairs: load, validate, tokenize, batch."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from selalign.data.collator import PreferenceCollator
from selalign.data.formats import InvalidRowError, row_problem, tokenize_pair
from selalign.data.sampler import EpochBatchSampler, LengthGroupedBatchSampler, pair_lengths

log = logging.getLogger(__name__)

ROW = "__row__"  # optional column: a row's place (from 0) in its source, which may differ from its place in a split


def json_lines_of_rows(path: Path) -> list[int]:
    """The line number (from 1) of each row of a JSON Lines file: its non-blank lines (the json reader skips blank ones)."""
    stat = path.stat()
    return _non_blank_lines(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _non_blank_lines(path: Path, mtime_ns: int, size: int) -> list[int]:  # read once per version of the file
    with open(path, "rb") as f:
        return [number for number, line in enumerate(f, start=1) if line.strip()]


@dataclass(frozen=True)
class RowSource:
    """Where a split's rows come from, to name a row as its user finds it.

    ``name``: the file as given, or a dataset such as ``org/data[train]``. Rows of a JSON Lines file
    (``lines_of``) are named by their line, blank lines counted as in an editor; others by their number from 1 in
    the source (``rows_of`` says of what when it is not plain, e.g. "the JSON array").
    """

    name: str
    is_file: bool = True
    lines_of: Path | None = None
    rows_of: str = ""

    def position(self, row: int) -> dict:
        """Where row ``row`` (from 0, in the source's order) is, as fields of a skipped-rows entry."""
        where = {"line": json_lines_of_rows(self.lines_of)[row]} if self.lines_of is not None else {"row": row + 1}
        return {"file" if self.is_file else "source": self.name, **where}

    def locate(self, row: int) -> str:
        if self.lines_of is not None:
            return f"{self.name}, line {json_lines_of_rows(self.lines_of)[row]}"
        return f"{self.name}, row {row + 1}" + (f" of {self.rows_of}" if self.rows_of else "")


class PreferenceDataModule(L.LightningDataModule):
    """Train and validation pairs; subclasses say where rows come from by implementing ``load_splits``.

    Args:
        tokenizer: the policy's tokenizer (given by the entry point).
        batch_size: pairs per optimizer micro-step; ``eval_batch_size`` for validation (default: the same).
        max_length: prompt + response tokens per row; ``max_prompt_length``: prompt tokens kept (from the right),
            half of ``max_length`` unless set.
        on_invalid: ``error`` stops at the first bad row naming its file and line (or row) and the field; ``skip``
            drops bad rows, counts them and writes them, with file and line, to ``<output_dir>/skipped_rows.jsonl``.
        seed: the train batches' order is a function of (seed, epoch): runs are repeatable and resumable.
        packing: batches also carry their sequences packed into rows without padding, which models run where they
            support it (``selalign.data.PreferenceCollator``, ``selalign.logprobs.token_logps``).
        group_by_length: train batches of pairs of similar length (less padding), see ``selalign.data.sampler``;
            None: on when ``packing`` is off.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = None,
        on_invalid: str = "error",
        num_workers: int = 0,
        pad_to_multiple_of: int = 1,
        output_dir: str | None = None,
        seed: int = 0,
        packing: bool = True,
        group_by_length: bool | None = None,
    ):
        super().__init__()
        if on_invalid not in ("error", "skip"):
            raise ValueError(f"data.on_invalid must be 'error' or 'skip', got {on_invalid!r}")
        max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
        if not 0 < max_prompt_length < max_length:
            raise ValueError(f"need 0 < data.max_prompt_length < data.max_length, got {max_prompt_length} and {max_length}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.on_invalid, self.num_workers, self.output_dir = on_invalid, num_workers, output_dir
        self.pad_to_multiple_of, self.seed, self.packing = pad_to_multiple_of, seed, packing
        self.group_by_length = not packing if group_by_length is None else group_by_length
        self.splits: dict[str, list[dict]] = {}
        self.stats: dict[str, int] = {}

    def load_splits(self) -> tuple[datasets.DatasetDict, dict[str, RowSource | str]]:
        """(rows with ``train`` and ``validation`` splits, each split's source for messages: a ``RowSource``, or a
        name whose rows are numbered in the split's order). Rows may carry their place in the source as ``ROW``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.tokenizer is None:
            raise ValueError("PreferenceDataModule needs the policy's tokenizer before setup")
        raw, sources = self.load_splits()
        skipped, first_index = [], 0
        for split in ("train", "validation"):
            source = sources[split] if isinstance(sources[split], RowSource) else RowSource(sources[split], is_file=False)
            rows = self._valid_rows(raw[split], source, skipped)
            if not rows:
                raise ValueError(f"no valid preference rows left in {source.name} ({split}: {len(raw[split])} rows read)")
            self.splits[split] = self._tokenize(rows, split, first_index)
            first_index += len(rows)
        if skipped:
            log.warning("skipped %d invalid rows (data.on_invalid=skip)", len(skipped))
            if self.output_dir:
                with open(Path(self.output_dir) / "skipped_rows.jsonl", "w") as f:
                    f.writelines(json.dumps(entry, default=str) + "\n" for entry in skipped)
        self.stats["skipped_rows"] = len(skipped)

    def _valid_rows(self, split: datasets.Dataset, source: RowSource, skipped: list) -> list[dict]:
        rows = []
        for position, row in enumerate(split):
            number = row.pop(ROW, position)
            problem = row_problem(row)
            if problem is None:
                rows.append(row)
                continue
            field, what = problem
            if self.on_invalid == "error":
                raise InvalidRowError(f"{source.locate(number)}: field {field!r}: {what}")
            skipped.append({**source.position(number), "field": field, "problem": what, "data": row})
        return rows

    def _tokenize(self, rows: list[dict], split: str, first_index: int) -> list[dict]:
        """Tokenized pairs; ``index`` numbers pairs across both splits (train first), the key of cached reference log-probs."""
        records = []
        truncated_prompts = truncated_responses = 0
        for index, row in enumerate(rows, start=first_index):
            pair = tokenize_pair(self.tokenizer, row, self.max_length, self.max_prompt_length)
            truncated_prompts += pair.prompt_truncated
            truncated_responses += pair.response_truncated
            records.append({"index": index, "id": str(row.get("id", index)), **vars(pair)})
            if row.get("group") is not None:  # what kind of pair it is (the world's deciding rule): metrics per group
                records[-1]["group"] = str(row["group"])
        self.stats[f"{split}/pairs"] = len(records)
        self.stats[f"{split}/truncated_prompts"] = truncated_prompts
        self.stats[f"{split}/truncated_responses"] = truncated_responses
        if truncated_prompts or truncated_responses:
            log.info("%s: truncated %d prompts and %d response pairs to fit max_length=%d", split, truncated_prompts, truncated_responses, self.max_length)
        return records

    def records(self) -> list[dict]:
        """Every tokenized pair of both splits, in ``index`` order."""
        return self.splits["train"] + self.splits["validation"]

    def attach_cached_logps(self, role: str, chosen: list, rejected: list) -> None:
        """Give every pair the cached per-token log-probs of a frozen ``role`` (lists indexed by ``index``); batches
        then carry them under ``CACHED_LOGPS[role]`` (``ref_logps`` for the reference)."""
        for record in self.records():
            record.setdefault("cached_logps", {})[role] = (chosen[record["index"]], rejected[record["index"]])

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> StatefulDataLoader:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if shuffle and self.group_by_length:
            sampler = LengthGroupedBatchSampler(pair_lengths(self.splits[split]), batch_size, self.seed, rank, world_size)
        else:
            sampler = EpochBatchSampler(len(self.splits[split]), batch_size, self.seed, shuffle, rank, world_size)
        collator = PreferenceCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.packing)
        return StatefulDataLoader(self.splits[split], batch_sampler=sampler, collate_fn=collator, num_workers=self.num_workers)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)
