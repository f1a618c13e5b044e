"""Length-grouped batching: coverage, less padding than random batches, determinism, disjoint rank shares."""

import pytest
import torch

from selalign.data import PreferenceCollator
from torchdata.stateful_dataloader import StatefulDataLoader

from selalign.data.sampler import EpochBatchSampler, LengthGroupedBatchSampler, pair_lengths


def skewed_pairs(count: int, seed: int = 0) -> list[dict]:
    """Pairs whose lengths follow a long-tailed (log-normal) distribution, as in chat preference data."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(count):
        prompt, chosen, rejected = (int(x) for x in torch.empty(3).log_normal_(3.5, 0.8, generator=generator).clamp(1, 600))
        pairs.append({"index": index, "prompt_ids": [5] * prompt, "chosen_ids": [6] * chosen, "rejected_ids": [7] * rejected})
    return pairs


def padding_share(pairs: list[dict], batch_sampler) -> float:
    """Share of the batches' token slots that are padding, measured on the collated [2B, T] batches."""
    padded = real = 0
    for batch in StatefulDataLoader(pairs, batch_sampler=batch_sampler, collate_fn=PreferenceCollator(0)):
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return 1 - real / padded


@pytest.mark.parametrize("count", [1, 7, 64, 1003])
def test_every_index_exactly_once_per_epoch(count):
    sampler = LengthGroupedBatchSampler(pair_lengths(skewed_pairs(count)), batch_size=8, seed=3, mega_batch_factor=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(count))
        assert all(0 < len(batch) <= 8 for batch in batches)


def test_less_padding_than_random_batches_on_skewed_lengths():
    pairs = skewed_pairs(2000)
    grouped = padding_share(pairs, LengthGroupedBatchSampler(pair_lengths(pairs), batch_size=8, seed=0))
    random = padding_share(pairs, EpochBatchSampler(len(pairs), batch_size=8, seed=0))
    assert grouped < 0.5 * random, f"padding share: length-grouped {grouped:.3f} vs random {random:.3f} (ratio {grouped / random:.2f})"


def test_longest_pair_comes_first():
    pairs = skewed_pairs(500)
    lengths = pair_lengths(pairs)
    first = next(iter(LengthGroupedBatchSampler(lengths, batch_size=8, seed=1)))
    assert max(lengths[i] for i in first) == max(lengths)


def test_order_is_a_function_of_seed_and_epoch():
    lengths = pair_lengths(skewed_pairs(300))

    def batches(seed, epoch):
        sampler = LengthGroupedBatchSampler(lengths, batch_size=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)


def test_ranks_get_disjoint_shares_with_equal_step_counts_and_similar_lengths():
    lengths = pair_lengths(skewed_pairs(960))
    shares = [list(LengthGroupedBatchSampler(lengths, batch_size=4, seed=2, rank=rank, world_size=3)) for rank in range(3)]
    assert len({len(share) for share in shares}) == 1
    indices = [i for share in shares for batch in share for i in batch]
    assert sorted(indices) == list(range(960))
    # The ranks' batches of one step come from the same sorted run: their longest pairs are close.
    longest = torch.tensor([[max(lengths[i] for i in batch) for batch in share] for share in shares], dtype=torch.float)
    spread = (longest.max(0).values - longest.min(0).values) / longest.max(0).values
    assert spread.median() < 0.1, f"median relative spread of the ranks' longest pairs per step: {spread.median():.3f}"


def test_uneven_tail_is_dropped_like_the_random_sampler():
    lengths = pair_lengths(skewed_pairs(50))
    grouped = [list(LengthGroupedBatchSampler(lengths, batch_size=4, seed=0, rank=r, world_size=3)) for r in range(3)]
    plain = [list(EpochBatchSampler(50, batch_size=4, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in grouped] == [len(s) for s in plain]
    seen = [i for share in grouped for batch in share for i in batch]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "length_grouped"])
def test_a_restored_loader_continues_after_the_batches_it_had_handed_out(grouped, num_workers):
    pairs = skewed_pairs(50)

    def loader(epoch):
        sampler = LengthGroupedBatchSampler(pair_lengths(pairs), batch_size=4, seed=5) if grouped else EpochBatchSampler(50, batch_size=4, seed=5)
        sampler.set_epoch(epoch)
        return StatefulDataLoader(pairs, batch_sampler=sampler, collate_fn=PreferenceCollator(0), num_workers=num_workers)

    def indices(batches):
        return [batch["pair_index"].tolist() for batch in batches]

    full = indices(loader(epoch=1))
    interrupted = loader(epoch=1)
    iterator = iter(interrupted)
    taken = [next(iterator) for _ in range(5)]
    state = interrupted.state_dict()
    resumed = loader(epoch=0)  # a new process: Lightning sets the epoch from its own progress, the state carries it too
    resumed.load_state_dict(state)
    assert indices(taken) + indices(resumed) == full
    assert resumed.batch_sampler.epoch == 1

    finished = loader(epoch=1)
    list(finished)
    next_epoch = loader(epoch=1)
    next_epoch.load_state_dict(finished.state_dict())  # the saved epoch was complete: the next one starts
    assert indices(next_epoch) == indices(loader(epoch=2)) != full
    assert next_epoch.batch_sampler.epoch == 2
