"""Deterministic, resumable batches: the order is a pure function of (seed, epoch, rank).

``EpochBatchSampler`` cuts each epoch's permutation into batches and gives every rank its share;
``LengthGroupedBatchSampler`` puts pairs of similar length into one batch (less padding). Both are the
``batch_sampler`` of a torchdata ``StatefulDataLoader``: their ``state_dict`` (the epoch and how many of its
batches this rank has taken) travels in the loader's state, which Lightning keeps in every checkpoint, so a run
resumed mid-epoch continues with the next unseen batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def pair_lengths(pairs: list[dict]) -> list[int]:
    """Padded-row length of each pair: prompt + the longer of its two responses."""
    return [len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]


class EpochOrder(Sampler[int]):
    """The dataset's indices in one epoch's order: a permutation drawn from (seed, epoch), or 0..n-1 unshuffled."""

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.num_items, generator=self.generator()).tolist() if self.shuffle else range(self.num_items))

    def __len__(self) -> int:
        return self.num_items


class EpochBatchSampler:
    """Batches of dataset indices, reshuffled every epoch from (seed, epoch), split across ranks; resumable.

    Rank r of ``world_size`` takes batches r, r + world_size, ... of the epoch's list, so ranks see disjoint pairs
    and together cover the epoch; the list is cut to a multiple of ``world_size`` so every rank takes the same
    number of steps. ``sampler`` (an ``EpochOrder``) holds the epoch: Lightning calls ``set_epoch`` on a loader's
    ``batch_sampler.sampler`` at every epoch start.

    ``state_dict()`` is ``{"epoch", "yielded"}``: the epoch and how many of its batches this rank has handed out.
    After ``load_state_dict``, the next iteration over that epoch starts after those batches; when that epoch was
    finished, the sampler moves to the next epoch, which starts at its first batch.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.sampler = EpochOrder(num_items, seed, shuffle)
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._position = (0, 0)  # (epoch, batches of it handed out) of the current iteration
        self._resume_at: tuple[int, int] | None = None

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch, for all ranks, in order."""
        order = list(self.sampler)
        return [order[start : start + self.batch_size] for start in range(0, self.num_items, self.batch_size)]

    def rank_batches(self) -> list[list[int]]:
        batches = self.epoch_batches()
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch is read at the first batch, after Lightning's set_epoch.
        resume_at, self._resume_at = self._resume_at, None
        start = resume_at[1] if resume_at is not None and resume_at[0] == self.epoch else 0
        self._position = (self.epoch, start)
        for batch in self.rank_batches()[start:]:
            self._position = (self.epoch, self._position[1] + 1)
            yield batch

    def __len__(self) -> int:
        batches = -(-self.num_items // self.batch_size)
        return batches // self.world_size if self.world_size > 1 else batches

    def state_dict(self) -> dict[str, int]:
        epoch, yielded = self._position
        return {"epoch": self.epoch, "yielded": yielded if epoch == self.epoch else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # The epoch is set here, before any iteration: loader workers draw their first batches at iter().
        if state["yielded"] >= len(self):  # that epoch was finished: the next one starts at its first batch
            self.set_epoch(state["epoch"] + 1)
            self._resume_at = None
        else:
            self.set_epoch(state["epoch"])
            self._resume_at = (state["epoch"], state["yielded"])


class LengthGroupedBatchSampler(EpochBatchSampler):
    """Batches of indices of similar ``lengths``, reshuffled every epoch from (seed, epoch), split across ranks.

    Like transformers' ``LengthGroupedSampler``: shuffle, cut the order into mega-batches of ``mega_batch_factor``
    steps, sort each mega-batch by length, cut it into batches, then shuffle the steps. One step takes
    ``world_size`` consecutive batches (one per rank, ``EpochBatchSampler``'s split); grouping works on whole steps,
    so the ranks of one step get pairs of similar length too and none waits for a long batch of another. A
    mega-batch is ``mega_batch_factor`` steps: larger, tighter groups and less randomness. The step holding the
    longest pair comes first, so a run that would run out of memory does so at once.

    Every index appears exactly once per epoch when ``world_size`` is 1; with several ranks, trailing batches
    that would leave ranks with unequal step counts are dropped, as in ``EpochBatchSampler``.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, mega_batch_factor: int = 50):
        super().__init__(len(lengths), batch_size, seed, shuffle=True, rank=rank, world_size=world_size)
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be >= 1, got {mega_batch_factor}")
        self.lengths = torch.as_tensor(lengths)
        self.mega_batch_factor = mega_batch_factor

    def epoch_batches(self) -> list[list[int]]:
        if self.num_items == 0:
            return []
        generator = self.sampler.generator()
        order = torch.randperm(self.num_items, generator=generator)
        step_size = self.batch_size * self.world_size
        mega_batches = order.split(step_size * self.mega_batch_factor)
        indices = torch.cat([mega[self.lengths[mega].argsort(descending=True, stable=True)] for mega in mega_batches]).tolist()
        steps = [indices[start : start + step_size] for start in range(0, self.num_items, step_size)]
        # A last step too short to give every rank a batch stays last (the loader drops it); the others are shuffled.
        complete = len(steps) if len(steps[-1]) > step_size - self.batch_size else len(steps) - 1
        steps = [steps[i] for i in torch.randperm(complete, generator=generator).tolist()] + steps[complete:]
        longest = int(self.lengths.argmax())
        first = next((i for i, step in enumerate(steps[:complete]) if longest in step), 0)
        steps.insert(0, steps.pop(first))
        return [step[start : start + self.batch_size] for step in steps for start in range(0, len(step), self.batch_size)]
