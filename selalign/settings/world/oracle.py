"""Oracle token selection: which response tokens carry the preference.

The data pipeline tokenizes the prompt and the response separately and concatenates the ids, so the
response's token positions are exactly those of
``tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)``; the mask returned
here lines up with them one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def decisive_token_mask(tokenizer: PreTrainedTokenizerBase, response: str, spans: Sequence[Sequence[int]]) -> list[bool]:
    """One flag per response token: True when the token's characters overlap a decisive [start, end) span.

    A token overlaps a span when ``token_start < end and token_end > start``, so a value split into
    several tokens marks all of them, and a token that carries a leading space before the value
    (" dark") is marked while a token that ends exactly where a span starts is not. Needs a fast
    tokenizer (offset mappings).
    """
    for start, end in spans:
        if not 0 <= start < end <= len(response):
            raise ValueError(f"span [{start}, {end}) does not lie inside the response of {len(response)} characters")
    offsets = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [any(token_start < end and token_end > start for start, end in spans) for token_start, token_end in offsets]
