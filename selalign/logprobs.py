"""Per-token log-probs of the labels: the hot path of every objective."""

from __future__ import annotations

import torch

# Float32 elements of one chunk of rows normalised at once. On CPU a small chunk stays in cache and its
# temporaries are reused by the allocator instead of being page-faulted in afresh; on GPU a large one keeps
# kernel launches few while still bounding the float32 temporaries (256 MiB).
CHUNK_ELEMENTS = {"cpu": 2**20, "default": 2**26}


def default_chunk_tokens(logits: torch.Tensor) -> int:
    """Rows per chunk for ``logits`` [..., V] on its device."""
    elements = CHUNK_ELEMENTS.get(logits.device.type, CHUNK_ELEMENTS["default"])
    return max(1, elements // logits.shape[-1])


class _LabelLogprobs(torch.autograd.Function):
    """log_softmax(rows)[target] = rows[target] - logsumexp(rows), chunk by chunk, for rows [N, V] and targets [N].

    Saves only the logits (in their own dtype) and the logsumexp [N]; the backward recomputes each chunk's
    softmax from them and writes d/d rows = grad * (onehot(target) - softmax(rows)) into one gradient buffer.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        logsumexp = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
        logps = torch.empty_like(logsumexp)
        for start in range(0, rows.shape[0], chunk_tokens):
            chunk = slice(start, start + chunk_tokens)
            values = rows[chunk].float()
            torch.logsumexp(values, dim=-1, out=logsumexp[chunk])
            torch.sub(values.gather(-1, targets[chunk, None]).squeeze(-1), logsumexp[chunk], out=logps[chunk])
        ctx.save_for_backward(rows, targets, logsumexp)
        ctx.chunk_tokens = chunk_tokens
        return logps

    @staticmethod
    def backward(ctx, grad_logps: torch.Tensor):
        rows, targets, logsumexp = ctx.saved_tensors
        grad_rows = torch.empty(rows.shape, dtype=rows.dtype, device=rows.device)
        for start in range(0, rows.shape[0], ctx.chunk_tokens):
            chunk = slice(start, start + ctx.chunk_tokens)
            grad = grad_logps[chunk, None]
            probs = torch.sub(rows[chunk].float(), logsumexp[chunk, None]).exp_()  # the chunk's softmax
            grad_rows[chunk] = probs.mul_(-grad).scatter_add_(-1, targets[chunk, None], grad)
        return grad_rows, None, None


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, chunk_tokens: int | None = None) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) for every position t >= 1, from next-token logits.

    Args:
        logits: [B, T, V], ``logits[:, t]`` predicts token t + 1 (a causal LM's output); may be a slice of a
            wider output layer (``logits[..., :vocab_size]``).
        input_ids: [B, T] long.
        chunk_tokens: rows of logits normalised at once (default: ``default_chunk_tokens``); the result does
            not depend on it.

    Returns:
        [B, T] float32, column 0 is 0 (no prediction for the first token). Computed as gathered logit -
        logsumexp(logits) in float32, a chunk of rows at a time, so that no full-vocabulary float32 tensor of
        the whole batch is ever alive: not in the forward, not saved for the backward (which keeps the logits
        in their own dtype and recomputes each chunk's softmax).
    """
    batch, length, vocab = logits.shape
    # Every position is scored, the last one against a dummy target and dropped: [B * T, V] is then a view of
    # the logits, where ``logits[:, :-1]`` would have to be copied.
    targets = torch.nn.functional.pad(input_ids[:, 1:], (0, 1)).reshape(-1)
    rows = logits.reshape(batch * length, vocab)
    logps = _LabelLogprobs.apply(rows, targets, chunk_tokens or default_chunk_tokens(logits))
    return torch.nn.functional.pad(logps.view(batch, length)[:, :-1], (1, 0))


def model_label_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One forward of a causal LM over the (already concatenated) rows, then ``label_logprobs``: [B, T]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return label_logprobs(logits, input_ids)
