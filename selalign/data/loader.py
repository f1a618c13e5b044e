"""Deterministic, resumable batching: the batch order is a pure function of (seed, epoch, rank).

Lightning saves a loader's ``state_dict`` in every checkpoint and restores it on resume, so a run killed
mid-epoch continues with the next unseen batch instead of starting the epoch again.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class EpochBatchSampler:
    """Batches of dataset indices, reshuffled every epoch from (seed, epoch), split across ranks.

    Rank r of ``world_size`` takes batches r, r + world_size, ... of the epoch's list, so ranks see disjoint pairs
    and together cover the epoch; the list is cut to a multiple of ``world_size`` so every rank takes the same
    number of steps. ``set_epoch`` is called by Lightning at each epoch start.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.num_items, self.batch_size, self.seed, self.shuffle = num_items, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch, for all ranks, in order."""
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)).tolist()
        else:
            order = list(range(self.num_items))
        return [order[start : start + self.batch_size] for start in range(0, self.num_items, self.batch_size)]

    def __iter__(self):
        batches = self.epoch_batches()
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return iter(batches[self.rank : usable : self.world_size])

    def __len__(self) -> int:
        batches = -(-self.num_items // self.batch_size)
        return batches // self.world_size if self.world_size > 1 else batches


class ResumableDataLoader(DataLoader):
    """A DataLoader over an ``EpochBatchSampler`` that remembers how many batches of the epoch it has handed out."""

    def __init__(self, dataset, batch_sampler: EpochBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._consumed = 0
        self._skip = 0

    def __iter__(self):
        # Resuming: skip the batches the interrupted run had already taken from this epoch.
        skip, self._skip = self._skip, 0
        self._consumed = skip
        sampler = self.batch_sampler
        remaining = list(iter(sampler))[skip:]
        if not remaining:
            return
        loader = DataLoader(self.dataset, batch_sampler=remaining, collate_fn=self.collate_fn, num_workers=self.num_workers, pin_memory=self.pin_memory)
        for batch in loader:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.set_epoch(state["epoch"])
        self._skip = state["consumed"]
