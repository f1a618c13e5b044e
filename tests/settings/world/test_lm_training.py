"""The plain next-token loop of the ladder: row formats, packing, training."""

import torch

from selalign.data.formats import tokenize_pair
from selalign.settings.world.lm_training import Architecture, demonstration_row, document_row, new_causal_lm, pack_rows, train_next_token


def test_demonstrations_are_tokenized_as_the_preference_pipeline_does(world, world_tokenizer):
    pair = world.preference_pairs("train", 1)[0]
    ids, targets = demonstration_row(world_tokenizer, pair["prompt"], pair["chosen"])
    tokenized = tokenize_pair(world_tokenizer, pair, max_length=256, max_prompt_length=128)
    assert ids == tokenized.prompt_ids + tokenized.chosen_ids
    assert targets == [False] * len(tokenized.prompt_ids) + [True] * len(tokenized.chosen_ids)


def test_packing_keeps_every_token_in_order_within_the_length():
    rows = [([1, 5, 6], [False, True, True]), ([1, 7], [False, True]), ([1, 8, 9, 9, 9], [False] + [True] * 4), ([1, 4], [False, True])]
    packed = pack_rows(rows, length=5)
    assert packed == [([1, 5, 6, 1, 7], [False, True, True, False, True]), ([1, 8, 9, 9, 9], [False] + [True] * 4), ([1, 4], [False, True])]
    assert pack_rows([([1] * 7, [True] * 7)], length=5) == [([1] * 7, [True] * 7)]


def test_training_lowers_the_loss_and_is_seeded(world, world_tokenizer):
    rows = pack_rows([document_row(world_tokenizer, d) for d in world.pretraining_corpus(64)], length=128)
    losses, weights = [], []
    for _ in range(2):
        model = new_causal_lm(Architecture(hidden_size=16, layers=1, heads=2), world_tokenizer, max_positions=128, seed=3)
        first = train_next_token(model, rows, steps=1, batch_size=4, lr=0.0, pad_token_id=world_tokenizer.pad_token_id, seed=0)
        losses.append(train_next_token(model, rows, steps=20, batch_size=4, lr=1e-2, pad_token_id=world_tokenizer.pad_token_id, seed=0))
        weights.append(model.state_dict())
    assert losses[0] < first
    assert losses[0] == losses[1] and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
