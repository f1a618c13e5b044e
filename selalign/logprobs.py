"""Per-token log-probs of the labels: the hot path of every objective."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.data.formats import response_token_ids

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


@torch.no_grad()
def response_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], answers: Sequence[str],
                    max_new_tokens: int | None = None, batch_size: int = 32) -> list[float]:
    """log pi(answer | prompt) of each answer, summed over its tokens, [N] floats, without gradient.

    Each answer is tokenized as training tokenizes a response (``selalign.data.formats.response_token_ids``: after
    its rendered prompt, with the end-of-sequence token where the format adds one), cut to ``max_new_tokens``
    tokens when longer (an answer that used every new token was truncated, and its end was never sampled).
    """
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids, ids = response_token_ids(tokenizer, prompt, answer)
        if max_new_tokens is not None and len(ids) > max_new_tokens:
            ids = ids[:max_new_tokens]
        rows.append((prompt_ids, ids))
    totals = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        length = max(len(p) + len(r) for p, r in batch)
        input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        response = torch.zeros_like(input_ids, dtype=torch.bool)
        for i, (p, r) in enumerate(batch):
            input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attention_mask[i, : len(p) + len(r)] = 1
            response[i, len(p) : len(p) + len(r)] = True
        logps = model_label_logprobs(model, input_ids.to(model.device), attention_mask.to(model.device)).cpu()
        totals += (logps * response).sum(dim=1).tolist()
    return totals



@torch.no_grad()
def candidate_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, answers: Sequence[str]) -> list[float]:
    """``response_logprobs`` of several candidate answers to one prompt, the tokens they share computed once.

    The prompt and the answers' common first tokens run as one row; its cache is repeated for every candidate, and
    only each candidate's own remaining tokens run after it. Equal to ``response_logprobs`` to float precision, at a
    fraction of its cost when the candidates differ only near their end (a probe's answer sentences).
    """
    rows = [response_token_ids(tokenizer, prompt, answer) for answer in answers]
    prompt_length = len(rows[0][0])
    full = [prompt_ids + ids for prompt_ids, ids in rows]
    shared = prompt_length
    while all(len(ids) > shared + 1 and ids[shared] == full[0][shared] for ids in full):
        shared += 1  # every candidate keeps at least one token of its own after the shared part
    device = model.device
    prefix = model(input_ids=torch.tensor([full[0][:shared]], device=device), use_cache=True)
    prefix_logps = prefix.logits[0].float().log_softmax(-1)
    shared_logp = sum(prefix_logps[t - 1, full[0][t]].item() for t in range(prompt_length, shared))
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(len(full))
    tails = [ids[shared:] for ids in full]
    length = max(len(tail) for tail in tails)
    input_ids = torch.tensor([tail + [tokenizer.pad_token_id] * (length - len(tail)) for tail in tails], device=device)
    attention_mask = torch.cat([torch.ones(len(tails), shared, dtype=torch.long), torch.tensor([[1] * len(t) + [0] * (length - len(t)) for t in tails])], dim=1)
    tail_logps = model(input_ids=input_ids, attention_mask=attention_mask.to(device), cache=cache, use_cache=False).logits.float().log_softmax(-1)
    first = prefix_logps[-1]  # the distribution of each candidate's first own token
    return [
        shared_logp + first[tail[0]].item() + sum(tail_logps[i, k - 1, tail[k]].item() for k in range(1, len(tail)))
        for i, tail in enumerate(tails)
    ]

# ----------------------------------------------------------------------------------------- token distributions


def response_log_softmax(logits: torch.Tensor, response_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) of the distribution behind each response token, [N, V] float32.

    ``logits`` [R, T, V] are next-token logits (``logits[:, t - 1]`` is the distribution of token t) and
    ``response_mask`` bool [R, T]; rows come in the order of the True positions of ``response_mask``.
    """
    predicting = response_mask[:, 1:].bool()
    return (logits[:, :-1][predicting].float() / temperature).log_softmax(dim=-1)


def at_response_positions(per_token: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Values [N] of the response tokens laid out as [R, T], 0 elsewhere (the inverse of ``response_log_softmax``'s order)."""
    positions = torch.nn.functional.pad(response_mask[:, 1:].bool(), (1, 0))
    return per_token.new_zeros(positions.shape).masked_scatter(positions, per_token)


def token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, response_mask: torch.Tensor, temperature: float = 1.0, skew: float = 0.0) -> torch.Tensor:
    """KL(P_t || skew P_t + (1 - skew) Q_t) at every response token t, full vocabulary, float32.

    Args:
        p_logits, q_logits: [R, T, V] next-token logits of the same rows (equal V).
        response_mask: bool [R, T], True on response tokens (never at t = 0).
        temperature: tau > 0; P_t = softmax(p_logits[:, t - 1] / tau), Q_t likewise.
        skew: alpha in [0, 1]; 0 gives the forward KL(P || Q), 1 gives 0 (DistiLLM's skew KL in between).

    Returns:
        [R, T], sum_v P_t(v) (log P_t(v) - log M_t(v)) with M_t = alpha P_t + (1 - alpha) Q_t (mixed in log space),
        at response tokens; 0 elsewhere. Vocabulary entries with P_t(v) = 0 add 0.
    """
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"logits {tuple(p_logits.shape)} and {tuple(q_logits.shape)} differ; slice both to the tokenizer's vocabulary first")
    p_logp = response_log_softmax(p_logits, response_mask, temperature)
    q_logp = response_log_softmax(q_logits, response_mask, temperature)
    if skew > 0:
        log_skew = math.log(skew)
        log_rest = math.log1p(-skew) if skew < 1 else -math.inf
        q_logp = torch.logaddexp(p_logp + log_skew, q_logp + log_rest)
    per_token = torch.where(p_logp.isneginf(), 0.0, p_logp.exp() * (p_logp - q_logp)).sum(dim=-1)
    return at_response_positions(per_token, response_mask)


class LogitsDistributions:
    """``TokenDistributions`` from full next-token logits kept for one step (the reference implementation).

    ``logits[role]`` is [2B, T, V] (all rows, chosen first) or [B, T, V] (the chosen rows only) for the roles
    ``policy`` (with gradient), ``reference`` and ``teacher``.
    """

    def __init__(self, logits: dict[str, torch.Tensor], response_mask: torch.Tensor):
        self.logits, self.response_mask = logits, response_mask
        self.num_pairs = response_mask.shape[0] // 2

    def _rows(self, role: str, rows: str) -> torch.Tensor:
        if role not in self.logits:
            raise ValueError(f"no next-token distributions of {role!r} this step (have {sorted(self.logits)}); the objective must declare them")
        logits = self.logits[role]
        chosen_only = logits.shape[0] == self.num_pairs
        if rows == "chosen":
            return logits[: self.num_pairs]
        if chosen_only:
            raise ValueError(f"only the chosen rows of {role!r} were run this step, but its {rows!r} rows were asked for")
        return logits[self.num_pairs :] if rows == "rejected" else logits

    def kl(self, p: str, q: str, rows: str = "all", temperature: float = 1.0, skew: float = 0.0) -> torch.Tensor:
        """``token_kl`` of role ``p`` against role ``q`` on the ``rows`` ("chosen", "rejected", "all")."""
        mask = {"chosen": self.response_mask[: self.num_pairs], "rejected": self.response_mask[self.num_pairs :], "all": self.response_mask}[rows]
        return token_kl(self._rows(p, rows), self._rows(q, rows), mask, temperature, skew)
