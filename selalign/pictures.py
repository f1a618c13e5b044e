"""Pictures of token selection: each response's tokens shaded by score, the kept ones marked, as standalone HTML.

``pair_pictures`` turns a batch and an objective's selection into ``PairPicture``s; ``selection_html`` renders
them. In the page, every response token is a ``<span class="tok">`` whose background shades its score (per pair,
lowest to highest), with the class ``kept`` (bold, underlined) when it carried the loss and ``decisive`` (outlined)
when the data's oracle marks it decisive. All text is HTML-escaped; the prompt is shown plain.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from matplotlib import colormaps
from matplotlib.colors import Normalize, to_hex
from transformers import PreTrainedTokenizerBase

SHADES = colormaps["Oranges"]
DARKEST_SHADE = 0.8  # the top of the colour map is too dark for black text

STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; }
.pair { border-top: 1px solid #ccc; padding: 0.5em 0; }
.prompt { color: #555; white-space: pre-wrap; }
.response { white-space: pre-wrap; font-family: monospace; margin: 0.5em 0; }
.kept { font-weight: bold; text-decoration: underline; }
.decisive { outline: 1px solid #c00; }
.stats { color: #555; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class TokenMark:
    """One response token: its text, score, whether it was kept, and whether the oracle marks it decisive (None: no oracle)."""

    text: str
    score: float
    kept: bool
    decisive: bool | None


@dataclass(frozen=True)
class PairPicture:
    """A preference pair as shown: the prompt's text and both responses' tokens."""

    prompt: str
    chosen: list[TokenMark]
    rejected: list[TokenMark]


def token_texts(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """The text each token adds, spaces included: decoded next to the previous token (tokenizers that drop a
    token's leading space when it is decoded alone keep it this way)."""
    texts = []
    for i, token in enumerate(ids):
        previous = tokenizer.decode(ids[i - 1 : i]) if i else ""
        both = tokenizer.decode(ids[max(i - 1, 0) : i + 1])
        texts.append(both[len(previous) :] if both.startswith(previous) else tokenizer.decode([token]))
    return texts


def response_marks(
    tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, response: torch.Tensor, kept: torch.Tensor, scores: torch.Tensor, decisive: torch.Tensor | None
) -> list[TokenMark]:
    """The marks of one row's response tokens (where ``response`` is True); every argument is one row [T]."""
    positions = response.nonzero().flatten().tolist()
    texts = token_texts(tokenizer, ids[positions].tolist())
    return [
        TokenMark(text, float(scores[t]), bool(kept[t]), None if decisive is None else bool(decisive[t]))
        for text, t in zip(texts, positions, strict=True)
    ]


def pair_pictures(batch: dict[str, torch.Tensor], selected: torch.Tensor, scores: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> list[PairPicture]:
    """One picture per pair of ``batch`` (``input_ids``, ``attention_mask``, ``response_mask``, optional
    ``decisive_mask``; [2B, T], chosen rows first), given the objective's ``selected`` and ``token_scores`` [2B, T]."""
    ids, response = batch["input_ids"].cpu(), batch["response_mask"].cpu()
    prompt = batch["attention_mask"].cpu().bool() & ~response
    selected, scores = selected.cpu(), scores.detach().float().cpu()
    decisive = batch.get("decisive_mask")
    decisive = decisive.cpu() if decisive is not None else None
    num_pairs = ids.shape[0] // 2

    def marks(row: int) -> list[TokenMark]:
        return response_marks(tokenizer, ids[row], response[row], selected[row], scores[row], None if decisive is None else decisive[row])

    return [
        PairPicture(tokenizer.decode(ids[i][prompt[i]].tolist()), marks(i), marks(num_pairs + i))
        for i in range(num_pairs)
    ]


def token_span(mark: TokenMark, shade: Normalize) -> str:
    classes = " ".join(["tok", *(["kept"] if mark.kept else []), *(["decisive"] if mark.decisive else [])])
    colour = to_hex(SHADES(DARKEST_SHADE * float(shade(mark.score))))
    return f'<span class="{classes}" style="background:{colour}" title="score {mark.score:.4g}">{html.escape(mark.text)}</span>'


def response_stats(marks: list[TokenMark]) -> str:
    """``kept k of n tokens`` and, with an oracle, ``d decisive, h of them kept``."""
    kept = sum(m.kept for m in marks)
    text = f"kept {kept} of {len(marks)} tokens"
    if marks and marks[0].decisive is not None:
        decisive = sum(bool(m.decisive) for m in marks)
        text += f"; {decisive} decisive, {sum(bool(m.decisive) and m.kept for m in marks)} of them kept"
    return text


def pair_html(index: int, picture: PairPicture) -> str:
    scores = [m.score for m in picture.chosen + picture.rejected]
    shade = Normalize(min(scores, default=0.0), max(scores, default=0.0))
    responses = [
        f'<div class="response {role}" data-role="{role}"><b>{role}</b> <span class="stats">({response_stats(marks)})</span>\n'
        + "".join(token_span(m, shade) for m in marks)
        + "</div>"
        for role, marks in (("chosen", picture.chosen), ("rejected", picture.rejected))
    ]
    return f'<section class="pair" data-pair="{index}"><div class="prompt">{html.escape(picture.prompt)}</div>{"".join(responses)}</section>'


def selection_html(pictures: Sequence[PairPicture], title: str) -> str:
    """A standalone HTML page of ``pictures``, one section per pair, under ``title``."""
    legend = (
        "Background: the token's score (per pair, light = lowest, dark = highest; hover for the value). "
        '<span class="kept">Bold underlined</span>: kept (carried the loss). '
        '<span class="decisive">Outlined</span>: decisive according to the data\'s oracle.'
    )
    body = "".join(pair_html(i, p) for i, p in enumerate(pictures))
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>'
        f"<body><h1>{html.escape(title)}</h1><p>{legend}</p>{body}</body></html>"
    )
