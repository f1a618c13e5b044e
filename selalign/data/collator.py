"""Batches of pairs: chosen and rejected rows concatenated on the batch axis, right-padded."""

from __future__ import annotations

import torch

# Batch key of the cached per-token log-probs of each frozen role (``selalign.refcache``).
CACHED_LOGPS = {"reference": "ref_logps", "selector": "selector_logps", "selector_base": "selector_base_logps"}


class PreferenceCollator:
    """Turns tokenized pairs into one padded batch of 2B rows, chosen rows first.

    Returns ``input_ids`` and ``attention_mask`` [2B, T], ``response_mask`` bool [2B, T] (True on response
    tokens), ``pair_index`` [B] (the pairs' dataset indices), ``pair_id`` (their ids, for error messages), and ``decisive_mask`` bool [2B, T] when the
    pairs carry oracle annotations, and ``ref_logps`` (``selector_logps``, ...) float [2B, T] (zero outside
    responses) when they carry cached log-probs of a frozen model (``CACHED_LOGPS``). ``pad_to_multiple_of`` rounds T up (tensor-core friendly shapes on GPU).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        rows = [p["prompt_ids"] + p["chosen_ids"] for p in pairs] + [p["prompt_ids"] + p["rejected_ids"] for p in pairs]
        prompt_lengths = [len(p["prompt_ids"]) for p in pairs] * 2
        length = max(len(r) for r in rows)
        length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        response_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, (row, prompt_length) in enumerate(zip(rows, prompt_lengths)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
            response_mask[i, prompt_length : len(row)] = True
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "pair_index": torch.tensor([p["index"] for p in pairs], dtype=torch.long),
            "pair_id": [p.get("id", str(p["index"])) for p in pairs],
        }
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
