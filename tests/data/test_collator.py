"""Batches of pairs: the padded per-token layout and the packed rows the models run on."""

import pytest
import torch

from selalign.data import PreferenceCollator
from selalign.data.collator import pack_sequences


def pairs_of(lengths):
    """Pairs with (prompt, chosen, rejected) token counts; token values name their pair, side and place."""
    pairs = []
    for index, (prompt, chosen, rejected) in enumerate(lengths):
        pairs.append({
            "index": index,
            "prompt_ids": [1000 + 100 * index + t for t in range(prompt)],
            "chosen_ids": [2000 + 100 * index + t for t in range(chosen)],
            "rejected_ids": [3000 + 100 * index + t for t in range(rejected)],
        })
    return pairs


def test_first_fit_decreasing_fills_rows_in_order():
    # Longest first: 7 opens row 0, 5 opens row 1, 3 fills row 0 (10), 2 and 1 join row 1 (8).
    assert pack_sequences([3, 7, 2, 5, 1], capacity=10) == [[1, 0], [3, 2, 4]]


def test_label_layout_points_at_each_response_token_in_both_layouts():
    batch = PreferenceCollator(pad_token_id=0)(pairs_of([(3, 4, 2), (2, 1, 6), (5, 3, 3)]))
    mask = batch["response_mask"]
    assert batch["label_ids"].tolist() == batch["input_ids"][mask].tolist()  # row-major: chosen rows first
    assert batch["num_chosen_labels"] == 4 + 1 + 3
    # the padded rows: the predicting position is the token's own minus one, in the flattened [2B, T]
    assert torch.equal(batch["input_ids"].flatten()[batch["label_positions"] + 1], batch["label_ids"])
    packed = batch["packed"]
    assert torch.equal(packed["input_ids"].flatten()[packed["label_positions"] + 1], batch["label_ids"])
    # the predicting position belongs to the same sequence: one position earlier in its own numbering
    positions = packed["position_ids"].flatten()
    assert torch.equal(positions[packed["label_positions"] + 1], positions[packed["label_positions"]] + 1)


def test_packed_rows_hold_every_sequence_whole_with_restarting_positions():
    lengths = [(3, 4, 2), (2, 1, 6), (5, 3, 3), (1, 1, 1)]
    batch = PreferenceCollator(pad_token_id=0)(pairs_of(lengths))
    packed = batch["packed"]
    rows, capacity = packed["input_ids"].shape
    assert capacity == batch["input_ids"].shape[1] == 8  # no row is longer than a padded one
    assert rows < 2 * len(lengths)  # short sequences share rows
    sequences = [p + c for p, c, _ in lengths] + [p + r for p, _, r in lengths]
    assert (packed["input_ids"] != 0).sum() == sum(sequences)  # no token twice, none lost
    for row_ids, row_positions in zip(packed["input_ids"].tolist(), packed["position_ids"].tolist()):
        starts = [i for i, position in enumerate(row_positions) if position == 0]
        pieces = [row_ids[a:b] for a, b in zip(starts, starts[1:] + [capacity])]
        for piece in pieces:  # each piece is one whole sequence (prompt then response) or the row's padding
            if piece[0] == 0:
                assert set(piece) == {0}
                continue
            pair = (piece[0] - 1000) // 100
            side = (piece[-1] // 1000) - 1  # 1: chosen, 2: rejected
            prompt, chosen, rejected = lengths[pair]
            assert len(piece) == prompt + (chosen if side == 1 else rejected)
    # The first chosen_rows rows hold the chosen sequences only, the others the rejected ones only.
    chosen_part, rejected_part = packed["input_ids"][: packed["chosen_rows"]], packed["input_ids"][packed["chosen_rows"] :]
    assert not ((chosen_part >= 3000) & (chosen_part < 4000)).any() and not ((rejected_part >= 2000) & (rejected_part < 3000)).any()
    assert (packed["label_positions"][: batch["num_chosen_labels"]] < packed["chosen_rows"] * capacity).all()


def test_pad_to_multiple_of_rounds_padded_and_packed_lengths():
    batch = PreferenceCollator(pad_token_id=0, pad_to_multiple_of=8)(pairs_of([(3, 4, 2), (2, 9, 6)]))
    assert batch["input_ids"].shape == (4, 16) and batch["packed"]["input_ids"].shape[1] == 16


def test_without_packing_the_batch_has_no_packed_rows():
    batch = PreferenceCollator(pad_token_id=0, packing=False)(pairs_of([(3, 4, 2)]))
    assert "packed" not in batch and batch["label_ids"].numel() == 6


def test_an_empty_prompt_is_an_error_naming_the_pair():
    pairs = pairs_of([(2, 2, 2), (0, 3, 3)])
    pairs[1]["id"] = "row-7"
    with pytest.raises(ValueError, match="pair 'row-7' has an empty prompt"):
        PreferenceCollator(pad_token_id=0)(pairs)
