"""Per-token log-probs of the labels and next-token divergences: the hot path of every objective.

Two implementations with equal results. The reference one works on full next-token logits [R, T, V]
(``label_logprobs``, ``token_kl``, ``LogitsDistributions``). The one training uses never builds them: the
model's output layer is replaced by a ``FusedOutputLayer`` that, while a ``LabelRequest`` is pending, projects
only the final hidden states of the positions that predict response tokens, in tiles of tokens x vocabulary,
and recomputes each tile in the backward (``fused_label_logprobs``, ``fused_token_kl``,
``HiddenStateDistributions``). The projection runs inside the model's own forward, where FSDP and DeepSpeed
ZeRO-3 hold the output layer's full weight and gather it again for the backward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.data.formats import response_token_ids

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------ fused: hidden states -> log-probs, in tiles

# Float32 elements of one tile of logits [tokens, vocabulary], and the widest vocabulary slice of a tile, per device
# type: small on CPU (the tile stays in cache), large on GPU (few kernel launches; a float32 tile is 256 MiB).
TILE_ELEMENTS = {"cpu": 2**20, "default": 2**26}
VOCAB_TILE = {"cpu": 8192, "default": 32768}


@dataclass(frozen=True)
class Tiles:
    """Tokens and vocabulary entries of one tile of logits; results do not depend on them."""

    tokens: int
    vocab: int

    @staticmethod
    def default(device: torch.device, vocab_size: int) -> "Tiles":
        key = device.type if device.type in TILE_ELEMENTS else "default"
        vocab = max(1, min(vocab_size, VOCAB_TILE[key]))
        return Tiles(max(1, TILE_ELEMENTS[key] // vocab), vocab)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the output layer would compute in here: autocast's when it is on, else the inputs' own."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _tile_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """hidden [n, H] @ weight [v, H]^T (+ bias) in their dtype, as the output layer computes it, then float32."""
    logits = torch.mm(hidden, weight.t()).float()
    return logits if bias is None else logits + bias.float()


def _add_product(accumulator: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """accumulator (float32) += a @ b, without rounding the product to a's dtype first (on CUDA: out_dtype)."""
    if a.dtype in (torch.bfloat16, torch.float16) and a.device.type == "cuda":
        try:
            accumulator.add_(torch.mm(a, b, out_dtype=torch.float32))
            return
        except (TypeError, RuntimeError):  # torch without mm(out_dtype=)
            pass
    accumulator.addmm_(a.float(), b.float())


def _vocab_tiles(vocab_size: int, tiles: Tiles):
    return [(start, min(start + tiles.vocab, vocab_size)) for start in range(0, vocab_size, tiles.vocab)]


def _token_chunks(count: int, tiles: Tiles):
    return [slice(start, min(start + tiles.tokens, count)) for start in range(0, count, tiles.tokens)]


def _online_logsumexp(logits: torch.Tensor, running_max: torch.Tensor, running_sum: torch.Tensor) -> None:
    """Folds a tile's logits [n, v] into the running max and sum of exp(logit - max) of its n rows, in place."""
    new_max = torch.maximum(running_max, logits.amax(dim=1))
    running_sum.mul_((running_max - new_max).exp_()).add_((logits - new_max[:, None]).exp_().sum(dim=1))
    running_max.copy_(new_max)


class _FusedLabelLogprobs(torch.autograd.Function):
    """log softmax(hidden @ weight[:V]^T + bias)[target] for hidden [N, H], targets [N], in tiles of tokens x vocabulary.

    Forward: one pass over the tiles, an online logsumexp and the target's logit. Saves the inputs and the
    logsumexp [N]; the backward recomputes every tile (vocabulary tiles outside, so each tile of the weight's
    gradient is summed over the tokens in float32 once) and sums the hidden states' gradient over the vocabulary
    in float32. No tensor larger than one tile of logits exists at any time.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, vocab_size: int, tiles: Tiles):
        dtype = _compute_dtype(hidden, weight)
        count = hidden.shape[0]
        states = hidden.detach().to(dtype)
        running_max = torch.full((count,), -math.inf, dtype=torch.float32, device=hidden.device)
        running_sum = torch.zeros(count, dtype=torch.float32, device=hidden.device)
        target_logits = torch.zeros(count, dtype=torch.float32, device=hidden.device)
        for start, end in _vocab_tiles(vocab_size, tiles):
            weight_tile = weight.detach()[start:end].to(dtype)
            bias_tile = None if bias is None else bias.detach()[start:end]
            in_tile = (targets >= start) & (targets < end)
            local = (targets - start).clamp(0, end - start - 1)
            for chunk in _token_chunks(count, tiles):
                logits = _tile_logits(states[chunk], weight_tile, bias_tile)
                target_logits[chunk] = torch.where(in_tile[chunk], logits.gather(1, local[chunk, None]).squeeze(1), target_logits[chunk])
                _online_logsumexp(logits, running_max[chunk], running_sum[chunk])
        logsumexp = running_max + running_sum.log()
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
        ctx.vocab_size, ctx.tiles, ctx.dtype = vocab_size, tiles, dtype
        return target_logits - logsumexp

    @staticmethod
    def backward(ctx, grad_logps):
        hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        dtype, tiles = ctx.dtype, ctx.tiles
        states = hidden.to(dtype)
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if needs_hidden else None
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if needs_bias else None
        grad_logps = grad_logps.float()
        for start, end in _vocab_tiles(ctx.vocab_size, tiles):
            weight_tile = weight[start:end].to(dtype)
            bias_tile = None if bias is None else bias[start:end]
            in_tile = (targets >= start) & (targets < end)
            local = (targets - start).clamp(0, end - start - 1)
            tile_grad = torch.zeros((end - start, weight.shape[1]), dtype=torch.float32, device=weight.device) if needs_weight else None
            for chunk in _token_chunks(states.shape[0], tiles):
                grad = grad_logps[chunk]
                # d logp / d logit_v = onehot(target)_v - softmax_v
                grad_logits = (_tile_logits(states[chunk], weight_tile, bias_tile) - logsumexp[chunk, None]).exp_().mul_(-grad[:, None])
                grad_logits.scatter_add_(1, local[chunk, None], torch.where(in_tile[chunk], grad, 0.0)[:, None])
                if needs_bias:
                    grad_bias[start:end] += grad_logits.sum(dim=0)
                grad_logits = grad_logits.to(dtype)
                if needs_hidden:
                    _add_product(grad_hidden[chunk], grad_logits, weight_tile)
                if needs_weight:
                    _add_product(tile_grad, grad_logits.t(), states[chunk])
            if needs_weight:
                grad_weight[start:end] = tile_grad
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            grad_weight,
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None, None, None,
        )


def fused_label_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                         vocab_size: int | None = None, tiles: Tiles | None = None) -> torch.Tensor:
    """log p(target) under softmax(hidden @ weight[:vocab_size]^T + bias[:vocab_size]), without the logits.

    Args:
        hidden: [N, H] final hidden states of the positions whose next token is scored.
        weight: [V', H] the output layer's weight (V' >= vocab_size; rows past vocab_size are not part of the
            distribution and get no gradient). bias: [V'] or None.
        targets: long [N], the scored tokens (< vocab_size).
        vocab_size: the tokenizer's vocabulary (default: all V' rows).
        tiles: tile sizes (default: ``Tiles.default``); the result does not depend on them.

    Returns:
        [N] float32, equal to ``log_softmax(hidden @ weight.T + bias)[:, :vocab_size].gather(target)`` computed in
        the dtype the output layer computes in (autocast's when on), normalised in float32.
    """
    vocab_size = vocab_size or weight.shape[0]
    return _FusedLabelLogprobs.apply(hidden, weight, bias, targets, vocab_size, tiles or Tiles.default(hidden.device, vocab_size))


class _FusedTokenKL(torch.autograd.Function):
    """KL(P || skew P + (1 - skew) Q) per token, P and Q the softmax of two models' logits / temperature, in tiles.

    With a = p_logits / tau, b = q_logits / tau, log M = logaddexp(log skew + log P, log(1 - skew) + log Q) and
    s = skew * sum_v P_v^2 / M_v (0 without skew), the gradients per token are
        dKL/da_v = P_v (log P_v - log M_v - skew P_v / M_v - KL + s),   dKL/db_v = Q_v (1 - s) - (1 - skew) P_v Q_v / M_v
    (for skew = 0: P (log P - log Q - KL) and Q - P). Forward: one pass for both logsumexps, one for KL and s;
    the backward recomputes each tile from the saved hidden states.
    """

    @staticmethod
    def forward(ctx, p_hidden, p_weight, p_bias, q_hidden, q_weight, q_bias, vocab_size: int, temperature: float, skew: float, tiles: Tiles):
        p_dtype, q_dtype = _compute_dtype(p_hidden, p_weight), _compute_dtype(q_hidden, q_weight)
        count, device = p_hidden.shape[0], p_hidden.device
        p_states, q_states = p_hidden.detach().to(p_dtype), q_hidden.detach().to(q_dtype)
        maxima = [torch.full((count,), -math.inf, dtype=torch.float32, device=device) for _ in range(2)]
        sums = [torch.zeros(count, dtype=torch.float32, device=device) for _ in range(2)]
        sides = ((p_states, p_weight.detach(), None if p_bias is None else p_bias.detach(), p_dtype),
                 (q_states, q_weight.detach(), None if q_bias is None else q_bias.detach(), q_dtype))
        for start, end in _vocab_tiles(vocab_size, tiles):
            tiles_of = [(w[start:end].to(dt), None if b is None else b[start:end]) for _, w, b, dt in sides]
            for chunk in _token_chunks(count, tiles):
                for side, (states, _, _, _) in enumerate(sides):
                    logits = _tile_logits(states[chunk], *tiles_of[side]) / temperature
                    _online_logsumexp(logits, maxima[side][chunk], sums[side][chunk])
        p_lse, q_lse = (m + s.log() for m, s in zip(maxima, sums))
        kl = torch.zeros(count, dtype=torch.float32, device=device)
        skew_sum = torch.zeros(count, dtype=torch.float32, device=device)
        for start, end in _vocab_tiles(vocab_size, tiles):
            tiles_of = [(w[start:end].to(dt), None if b is None else b[start:end]) for _, w, b, dt in sides]
            for chunk in _token_chunks(count, tiles):
                p_logp, q_logp, log_m, zero = _kl_tile(sides, tiles_of, chunk, p_lse, q_lse, temperature, skew)
                p = p_logp.exp()
                kl[chunk] += torch.where(zero, 0.0, p * (p_logp - log_m)).sum(dim=1)
                if skew > 0:
                    skew_sum[chunk] += torch.where(zero, 0.0, skew * (2 * p_logp - log_m).exp()).sum(dim=1)
        ctx.save_for_backward(p_hidden, p_weight, p_bias, q_hidden, q_weight, q_bias, p_lse, q_lse, kl, skew_sum)
        ctx.settings = (vocab_size, temperature, skew, tiles, p_dtype, q_dtype)
        return kl

    @staticmethod
    def backward(ctx, grad_kl):
        p_hidden, p_weight, p_bias, q_hidden, q_weight, q_bias, p_lse, q_lse, kl, skew_sum = ctx.saved_tensors
        vocab_size, temperature, skew, tiles, p_dtype, q_dtype = ctx.settings
        needs = ctx.needs_input_grad
        sides = ((p_hidden.to(p_dtype), p_weight, p_bias, p_dtype), (q_hidden.to(q_dtype), q_weight, q_bias, q_dtype))
        grads = []
        for side, (states, weight, bias, _) in enumerate(sides):
            first = 3 * side
            grads.append([
                torch.zeros(states.shape, dtype=torch.float32, device=states.device) if needs[first] else None,
                torch.zeros_like(weight) if needs[first + 1] else None,
                torch.zeros_like(bias, dtype=torch.float32) if needs[first + 2] else None,
            ])
        scale = grad_kl.float() / temperature
        log_rest = math.log1p(-skew) if skew < 1 else -math.inf
        for start, end in _vocab_tiles(vocab_size, tiles):
            tiles_of = [(w[start:end].to(dt), None if b is None else b[start:end]) for _, w, b, dt in sides]
            weight_grads = [torch.zeros((end - start, w.shape[1]), dtype=torch.float32, device=w.device) if grads[i][1] is not None else None
                            for i, (_, w, _, _) in enumerate(sides)]
            for chunk in _token_chunks(p_hidden.shape[0], tiles):
                p_logp, q_logp, log_m, zero = _kl_tile(sides, tiles_of, chunk, p_lse, q_lse, temperature, skew)
                p, q = p_logp.exp(), q_logp.exp()
                p_over_m = torch.where(zero, 0.0, (p_logp - log_m).exp())
                grad_a = torch.where(zero, 0.0, p * (p_logp - log_m - skew * p_over_m - kl[chunk, None] + skew_sum[chunk, None]))
                grad_b = q * (1 - skew_sum[chunk, None]) - torch.where(zero, 0.0, (log_rest + q_logp + p_logp - log_m).exp())
                for side, grad_logits in enumerate((grad_a, grad_b)):
                    states, _, _, dtype = sides[side]
                    grad_hidden, _, grad_bias = grads[side]
                    if grad_hidden is None and weight_grads[side] is None and grad_bias is None:
                        continue
                    grad_logits = grad_logits.mul_(scale[chunk, None])
                    if grad_bias is not None:
                        grad_bias[start:end] += grad_logits.sum(dim=0)
                    grad_logits = grad_logits.to(dtype)
                    if grad_hidden is not None:
                        _add_product(grad_hidden[chunk], grad_logits, tiles_of[side][0])
                    if weight_grads[side] is not None:
                        _add_product(weight_grads[side], grad_logits.t(), states[chunk])
            for side in range(2):
                if weight_grads[side] is not None:
                    grads[side][1][start:end] = weight_grads[side]
        out = []
        for (grad_hidden, grad_weight, grad_bias), (hidden, bias) in zip(grads, ((p_hidden, p_bias), (q_hidden, q_bias))):
            out += [None if grad_hidden is None else grad_hidden.to(hidden.dtype), grad_weight, None if grad_bias is None else grad_bias.to(bias.dtype)]
        return (*out, None, None, None, None)


def _kl_tile(sides, tiles_of, chunk, p_lse, q_lse, temperature, skew):
    """log P, log Q, log M [n, v] of one tile, and where P is 0 (those entries add nothing)."""
    (p_states, *_), (q_states, *_) = sides
    p_logp = _tile_logits(p_states[chunk], *tiles_of[0]) / temperature - p_lse[chunk, None]
    q_logp = _tile_logits(q_states[chunk], *tiles_of[1]) / temperature - q_lse[chunk, None]
    if skew == 0:
        log_m = q_logp
    elif skew == 1:
        log_m = p_logp
    else:
        log_m = torch.logaddexp(p_logp + math.log(skew), q_logp + math.log1p(-skew))
    return p_logp, q_logp, log_m, p_logp.isneginf()


def fused_token_kl(p: "HeadStates", q: "HeadStates", vocab_size: int, temperature: float = 1.0, skew: float = 0.0,
                   tiles: Tiles | None = None) -> torch.Tensor:
    """``token_kl`` from two models' hidden states at the same N positions, without their logits: [N] float32.

    KL(P_t || skew P_t + (1 - skew) Q_t) with P_t = softmax(p logits / temperature)[:vocab_size], Q_t likewise;
    gradients reach whichever hidden states and weights require them.
    """
    if p.hidden.shape[0] != q.hidden.shape[0]:
        raise ValueError(f"hidden states of {p.hidden.shape[0]} and {q.hidden.shape[0]} positions; both must be of the same tokens")
    return _FusedTokenKL.apply(p.hidden, p.weight, p.bias, q.hidden, q.weight, q.bias, vocab_size, temperature, skew,
                               tiles or Tiles.default(p.hidden.device, vocab_size))


# ------------------------------------------------------------------ the output layer that computes them in the forward


@dataclass
class HeadStates:
    """What a model's next-token distributions at N positions are made of: final hidden states [N, H] and the output
    layer's weight [V', H] (and bias) as seen inside the forward."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None = None


@dataclass
class LabelRequest:
    """What a ``FusedOutputLayer`` computes in one forward of its model.

    ``positions``: long [N], indices into the forward's flattened [rows * length] positions whose next token is
    scored; ``targets``: long [N], those tokens; ``vocab_size``: the tokenizer's vocabulary. With ``keep_states``,
    the layer also keeps the hidden states at ``positions`` (with their gradient) and a copy of its weight in
    ``states``, for divergences taken after the forward (under FSDP and ZeRO-3 the weight is only whole inside it).
    """

    positions: torch.Tensor
    targets: torch.Tensor
    vocab_size: int
    keep_states: bool = False
    states: HeadStates | None = field(default=None, repr=False)


class FusedOutputLayer(torch.nn.Linear):
    """A causal LM's output layer, with the same parameters, that returns the label log-probs [N] instead of logits
    while a ``LabelRequest`` is pending (``serving``), and plain logits otherwise (generation is unchanged).

    The model's forward passes the layer its final hidden states [R, T, H] and returns whatever the layer returns as
    ``logits``; the layer projects only the requested positions (``fused_label_logprobs``). It runs inside the model's
    forward and its own module call, where FSDP's unit holds the whole weight and DeepSpeed ZeRO-3 gathers it (and
    gathers it again for the backward), like any linear layer.
    """

    def __init__(self, linear: torch.nn.Linear):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter: tied input and output embeddings stay tied
        self.register_parameter("bias", linear.bias)
        self.request: LabelRequest | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        request = self.request
        if request is None:
            return super().forward(hidden_states)
        hidden = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, request.positions)
        if request.keep_states:
            request.states = HeadStates(hidden, self.weight.clone(), None if self.bias is None else self.bias.clone())
        return fused_label_logprobs(hidden, self.weight, self.bias, request.targets, request.vocab_size)

    def serving(self, request: LabelRequest):
        """Context in which the layer answers ``request`` (one forward of the model)."""
        return _Serving(self, request)


class _Serving:
    def __init__(self, layer: FusedOutputLayer, request: LabelRequest):
        self.layer, self.request = layer, request

    def __enter__(self) -> LabelRequest:
        self.layer.request = self.request
        return self.request

    def __exit__(self, *exc) -> None:
        self.layer.request = None


# Config attributes of models whose forward transforms the output layer's result (softcapping, scaling): the layer's
# log-probs would be transformed too, so those models keep full logits.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (or an adapter view of one), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fused_output_layer(model: torch.nn.Module) -> FusedOutputLayer | None:
    """The model's ``FusedOutputLayer``, installed in place of its linear output layer on the first call; None where
    the model's forward transforms the layer's result or its output layer is not a plain linear layer (logged once).

    Install it before the model is sharded (FSDP records each module's parameters when it wraps them).
    """
    lm = base_model(model)
    output = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if isinstance(output, FusedOutputLayer):
        return output
    reason = None
    if type(output) is not torch.nn.Linear:
        reason = f"its output layer is {type(output).__name__}, not a plain torch.nn.Linear"
    else:
        config = lm.config.get_text_config()
        transforms = [name for name in LOGIT_TRANSFORMS if getattr(config, name, None) not in (None, 1, 1.0)]
        if transforms:
            reason = f"its forward transforms the logits ({', '.join(transforms)})"
    if reason is not None:
        if not getattr(lm, "_selalign_full_logits_noted", False):
            log.warning("%s keeps full [rows, T, vocab] logits: %s", type(lm).__name__, reason)
            lm._selalign_full_logits_noted = True
        return None
    layer = FusedOutputLayer(output)
    lm.set_output_embeddings(layer)
    return layer


class HiddenStateDistributions:
    """``TokenDistributions`` from hidden states kept by ``FusedOutputLayer``: each ``kl`` runs ``fused_token_kl``,
    tile by tile, never holding a [tokens, vocabulary] tensor of the batch.

    ``states[role]`` holds the role's ``HeadStates`` at every response token of the rows it ran on, ``rows_run[role]``:
    "all" (the N response tokens of the [chosen; rejected] rows in row-major order) or "chosen" (the first
    ``num_chosen_labels`` of them). ``token_index`` [N] is each response token's flat index in the [2B, T] layout.
    """

    def __init__(self, states: dict[str, HeadStates], rows_run: dict[str, str], token_index: torch.Tensor, shape: tuple[int, int], num_chosen_labels: int, vocab_size: int):
        self.states, self.rows_run, self.token_index, self.shape = states, rows_run, token_index, shape
        self.num_chosen_labels, self.vocab_size = num_chosen_labels, vocab_size

    def _labels(self, rows: str) -> slice:
        return {"chosen": slice(0, self.num_chosen_labels), "rejected": slice(self.num_chosen_labels, None), "all": slice(None)}[rows]

    def _states(self, role: str, rows: str) -> HeadStates:
        if role not in self.states:
            raise ValueError(f"no next-token distributions of {role!r} this step (have {sorted(self.states)}); the objective must declare them")
        states = self.states[role]
        if self.rows_run[role] == "chosen" and rows != "chosen":
            raise ValueError(f"only the chosen rows of {role!r} were run this step, but its {rows!r} rows were asked for")
        return HeadStates(states.hidden[self._labels(rows)], states.weight, states.bias)

    def kl(self, p: str, q: str, rows: str = "all", temperature: float = 1.0, skew: float = 0.0) -> torch.Tensor:
        """[R, T]: ``fused_token_kl`` of role ``p`` against role ``q`` at the response tokens of ``rows`` ("chosen",
        "rejected", "all"), 0 elsewhere; equal to ``token_kl`` on full logits."""
        values = fused_token_kl(self._states(p, rows), self._states(q, rows), self.vocab_size, temperature, skew)
        num_rows, length = self.shape
        first_row = {"chosen": 0, "rejected": num_rows // 2, "all": 0}[rows]
        out_rows = num_rows if rows == "all" else num_rows // 2
        index = self.token_index[self._labels(rows)] - first_row * length
        return values.new_zeros(out_rows * length).index_copy(0, index, values).view(out_rows, length)


# ------------------------------------------------------------------ one model over one batch

# Attention implementations of transformers that take several sequences in one row, told apart by position ids that
# restart at 0: flash-attention's variable-length kernels; sdpa, eager and flex with a block-diagonal mask.
PACKING_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention", "sdpa", "eager")


def packing_unsupported(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot take packed rows (None when it can)."""
    lm = base_model(model)
    if not getattr(lm, "_supports_attention_backend", False):
        return f"{type(lm).__name__} does not build its attention masks from position ids (transformers' attention interface)"
    implementation = getattr(lm.config, "_attn_implementation", None)
    if implementation not in PACKING_ATTENTION:
        return f"attention implementation {implementation!r} is not one of {PACKING_ATTENTION}"
    return None


def _note_padded(model: torch.nn.Module, reason: str) -> None:
    lm = base_model(model)
    if not getattr(lm, "_selalign_padded_noted", False):
        log.warning("%s runs padded batches instead of packed rows: %s", type(lm).__name__, reason)
        lm._selalign_padded_noted = True


@dataclass
class TokenLogps:
    """One model's result on a batch of rows [R, T]: ``logps`` [R, T] float32, log p(token t | tokens < t) at response
    tokens; and, when asked for, its next-token distributions as ``states`` (fused) or ``logits`` [R, T, V]."""

    logps: torch.Tensor
    states: HeadStates | None = None
    logits: torch.Tensor | None = None


def token_logps(model, batch: dict, rows: str = "all", vocab_size: int | None = None, keep_distributions: bool = False,
                packing: bool = True, fused: bool = True) -> TokenLogps:
    """Per-token label log-probs of ``model`` on the [chosen; rejected] rows of ``batch`` (or the chosen rows only).

    Through the model's ``FusedOutputLayer``: on the batch's packed rows (``batch["packed"]``, see
    ``selalign.data.PreferenceCollator``) when ``packing`` and the model supports them, else on the padded rows, and
    only at the positions that predict response tokens. Models that cannot fuse (``fused_output_layer``) run the
    reference path: full logits of the padded rows, ``label_logprobs``; so do all models with ``fused=False``.
    ``logps`` is 0 off the responses in the fused path; the reference path leaves other positions' values as they come.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    count = input_ids.shape[0] if rows == "all" else input_ids.shape[0] // 2
    layer = fused_output_layer(model) if fused else None
    if layer is None:
        logits = model(input_ids=input_ids[:count], attention_mask=attention_mask[:count], use_cache=False).logits[..., :vocab_size]
        return TokenLogps(label_logprobs(logits, input_ids[:count]), logits=logits if keep_distributions else None)
    labels = batch["num_chosen_labels"] if rows == "chosen" else batch["label_ids"].shape[0]
    packed = batch.get("packed") if packing else None
    reason = packing_unsupported(model) if packed is not None else None
    if reason is not None:
        _note_padded(model, reason)
        packed = None
    if packed is not None:
        packed_rows = packed["chosen_rows"] if rows == "chosen" else packed["input_ids"].shape[0]
        ids, positions = packed["input_ids"][:packed_rows], packed["position_ids"][:packed_rows]
        if base_model(model).config._attn_implementation.startswith("flash_attention"):
            ids, positions = ids.reshape(1, -1), positions.reshape(1, -1)  # flash-attention takes packed sequences in one row
        inputs = {"input_ids": ids, "position_ids": positions}
        label_positions = packed["label_positions"][:labels]
    else:
        inputs = {"input_ids": input_ids[:count], "attention_mask": attention_mask[:count]}
        label_positions = batch["label_positions"][:labels]
    request = LabelRequest(label_positions, batch["label_ids"][:labels], vocab_size or layer.out_features, keep_distributions)
    with layer.serving(request):
        values = model(**inputs, use_cache=False).logits
    length = input_ids.shape[1]
    # Each response token's log-prob at its place in [R, T]: the token after its predicting position.
    token_index = batch["label_positions"][:labels] + 1
    logps = values.new_zeros(count * length).index_copy(0, token_index, values).view(count, length)
    return TokenLogps(logps, states=request.states)
