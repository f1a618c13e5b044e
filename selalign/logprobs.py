"""Per-token log-probs of the labels: the hot path of every objective."""

from __future__ import annotations

import torch

# Rows of logits normalised at once: bounds the float32 [rows, V] temporaries of log-softmax.
DEFAULT_CHUNK_TOKENS = 4096


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) for every position t >= 1, from next-token logits.

    Args:
        logits: [B, T, V], ``logits[:, t]`` predicts token t + 1 (a causal LM's output).
        input_ids: [B, T] long.

    Returns:
        [B, T] float32, column 0 is 0 (no prediction for the first token). Computed as
        gathered logit - logsumexp(logits), in chunks of rows so that no full-vocabulary float32
        log-softmax of the whole batch is ever alive.
    """
    batch, length, vocab = logits.shape
    predicting = logits[:, :-1].reshape(-1, vocab)
    targets = input_ids[:, 1:].reshape(-1, 1)
    pieces = []
    for start in range(0, predicting.shape[0], chunk_tokens):
        rows = predicting[start : start + chunk_tokens].float()
        pieces.append(rows.gather(-1, targets[start : start + chunk_tokens]).squeeze(-1) - rows.logsumexp(dim=-1))
    logps = torch.cat(pieces).view(batch, length - 1)
    return torch.nn.functional.pad(logps, (1, 0))


def model_label_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One forward of a causal LM over the (already concatenated) rows, then ``label_logprobs``: [B, T]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return label_logprobs(logits, input_ids)
