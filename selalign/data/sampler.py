"""Length-grouped batching: pairs of similar length share a batch, so batches carry less padding.

Like transformers' ``LengthGroupedSampler``: shuffle, cut the order into mega-batches of ``mega_batch_factor``
steps, sort each mega-batch by length, cut it into batches, then shuffle the steps. Deterministic in
(seed, epoch) and split across ranks like ``EpochBatchSampler``, whose resumable loader it plugs into.
"""

from __future__ import annotations

import torch

from selalign.data.loader import EpochBatchSampler


def pair_lengths(pairs: list[dict]) -> list[int]:
    """Padded-row length of each pair: prompt + the longer of its two responses."""
    return [len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]


class LengthGroupedBatchSampler(EpochBatchSampler):
    """Batches of indices of similar ``lengths``, reshuffled every epoch from (seed, epoch), split across ranks.

    One step takes ``world_size`` consecutive batches (one per rank, ``EpochBatchSampler``'s split); grouping
    works on whole steps, so the ranks of one step get pairs of similar length too and none waits for a long
    batch of another. A mega-batch is ``mega_batch_factor`` steps: larger, tighter groups and less randomness.
    The step holding the longest pair comes first, so a run that would run out of memory does so at once.

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
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
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
