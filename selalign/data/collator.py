"""Batches of pairs: chosen and rejected rows concatenated on the batch axis (right-padded), and the same sequences
packed into rows without padding."""

from __future__ import annotations

import torch

# Batch key of the cached per-token log-probs of each frozen role (``selalign.refcache``).
CACHED_LOGPS = {"reference": "ref_logps", "selector": "selector_logps", "selector_base": "selector_base_logps"}


def pack_sequences(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sequence indices grouped into rows of at most ``capacity`` tokens, first-fit in order of decreasing length."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


class PreferenceCollator:
    """Turns tokenized pairs into one batch of 2B sequences [chosen; rejected].

    The per-token layout every objective, scorer and picture reads, [2B, T] (right-padded to the longest sequence):
    ``input_ids``, ``attention_mask``, ``response_mask`` (bool, True on response tokens), ``decisive_mask`` where the
    pairs carry oracle annotations, and ``ref_logps`` (``selector_logps``, ...; float, 0 off the responses) where they
    carry cached log-probs of a frozen model (``CACHED_LOGPS``). ``pair_index`` [B] (the pairs' dataset indices) and
    ``pair_id`` (their ids, for error messages), and ``pair_group`` where the pairs carry a ``group`` (what kind of pair
    each is, e.g. the world's deciding rule). ``pad_to_multiple_of`` rounds T up (tensor-core friendly shapes).

    What the models score, response tokens only, N of them in row-major order of the [2B, T] layout (the first
    ``num_chosen_labels`` belong to the chosen rows): ``label_ids`` [N], the tokens, and ``label_positions`` [N], the
    flat index in [2B * T] of the position that predicts each (one before the token).

    With ``packing``, ``packed`` holds the same sequences without padding: the chosen ones, then the rejected ones,
    first-fit into rows as long as the longest sequence (rounded up like T), so that no row is longer than a padded
    one and attention never spans more than it would padded. ``input_ids`` and ``position_ids`` [P, C] (positions
    restart at 0 with every sequence; the unused tail of a row is padding, a sequence of its own that nothing reads),
    ``label_positions`` [N] (flat index in [P * C]) and ``chosen_rows`` (the first rows hold the chosen sequences).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1, packing: bool = True):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        rows = [p["prompt_ids"] + p["chosen_ids"] for p in pairs] + [p["prompt_ids"] + p["rejected_ids"] for p in pairs]
        prompt_lengths = [len(p["prompt_ids"]) for p in pairs] * 2
        for pair in pairs:
            if not pair["prompt_ids"]:
                raise ValueError(f"pair {pair.get('id', pair['index'])!r} has an empty prompt: the first response token would have nothing to be predicted from")
        length = self._round(max(len(r) for r in rows))
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        response_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, (row, prompt_length) in enumerate(zip(rows, prompt_lengths)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
            response_mask[i, prompt_length : len(row)] = True
        token_index = response_mask.flatten().nonzero().squeeze(1)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "label_ids": input_ids.flatten()[token_index],
            "label_positions": token_index - 1,
            "num_chosen_labels": int(response_mask[: len(pairs)].sum()),
            "pair_index": torch.tensor([p["index"] for p in pairs], dtype=torch.long),
            "pair_id": [p.get("id", str(p["index"])) for p in pairs],
        }
        if any("group" in p for p in pairs):
            batch["pair_group"] = [p.get("group") for p in pairs]
        if self.packing:
            batch["packed"] = self._pack(rows, prompt_lengths, len(pairs), length)
        for role in pairs[0].get("cached_logps", {}):
            cached = [p["cached_logps"][role][0] for p in pairs] + [p["cached_logps"][role][1] for p in pairs]
            logps = torch.zeros((len(rows), length), dtype=torch.float32)
            # Boolean-mask assignment fills response positions row by row, in order: the cache's layout.
            logps[response_mask] = torch.cat([torch.as_tensor(c, dtype=torch.float32) for c in cached])
            batch[CACHED_LOGPS[role]] = logps
        if pairs[0].get("chosen_decisive") is not None:
            decisive = torch.zeros((len(rows), length), dtype=torch.bool)
            masks = [p["chosen_decisive"] for p in pairs] + [p["rejected_decisive"] for p in pairs]
            for i, (mask, prompt_length) in enumerate(zip(masks, prompt_lengths)):
                decisive[i, prompt_length : prompt_length + len(mask)] = torch.tensor(mask, dtype=torch.bool)
            batch["decisive_mask"] = decisive
        return batch

    def _round(self, length: int) -> int:
        return -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

    def _pack(self, rows: list[list[int]], prompt_lengths: list[int], num_pairs: int, capacity: int) -> dict:
        lengths = [len(r) for r in rows]
        chosen_rows = pack_sequences(lengths[:num_pairs], capacity)
        rejected_rows = [[num_pairs + i for i in row] for row in pack_sequences(lengths[num_pairs:], capacity)]
        packed_rows = chosen_rows + rejected_rows
        input_ids = torch.full((len(packed_rows), capacity), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((len(packed_rows), capacity), dtype=torch.long)
        start = [0] * len(rows)  # flat index in [P * C] of each sequence's first token
        for r, members in enumerate(packed_rows):
            offset = 0
            for i in members:
                input_ids[r, offset : offset + lengths[i]] = torch.tensor(rows[i])
                position_ids[r, offset : offset + lengths[i]] = torch.arange(lengths[i])
                start[i] = r * capacity + offset
                offset += lengths[i]
            position_ids[r, offset:] = torch.arange(capacity - offset)
        label_positions = torch.cat([torch.arange(start[i] + prompt_lengths[i] - 1, start[i] + lengths[i] - 1) for i in range(len(rows))])
        return {"input_ids": input_ids, "position_ids": position_ids, "label_positions": label_positions, "chosen_rows": len(chosen_rows)}
