"""Next-token training of the world's small causal LMs from scratch: pretraining and supervised fine-tuning.

A training row is ``(token ids, target flags)``: the loss is the mean negative log-likelihood of the tokens
whose flag is True, each predicted from the tokens before it. Pretraining rows are ``[bos] document [eos]``
with every token after bos a target, several of them packed into one row (``pack_rows``); SFT rows are a prompt and its response in the framework's own format
(``selalign.data.formats``), with only the response tokens (eos included) as targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, get_scheduler

from selalign.data.formats import render_prompt, render_response
from selalign.logprobs import label_logprobs

Row = tuple[list[int], list[bool]]
# Share of a stage's steps spent warming the learning rate up (then cosine decay to zero).
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class Architecture:
    """Shape of a Llama-style decoder; the feed-forward width is ``4 * hidden_size``."""

    hidden_size: int
    layers: int
    heads: int

    def config(self, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.hidden_size, intermediate_size=4 * self.hidden_size,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.heads,
            max_position_embeddings=max_positions, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )


def new_causal_lm(architecture: Architecture, tokenizer: PreTrainedTokenizerBase, max_positions: int, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; its weights depend on ``seed`` only (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(architecture.config(tokenizer, max_positions))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def document_row(tokenizer: PreTrainedTokenizerBase, document: str) -> Row:
    ids = [tokenizer.bos_token_id, *tokenizer(document, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return ids, [False] + [True] * (len(ids) - 1)


def demonstration_row(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> Row:
    """The prompt and response tokenized exactly as ``selalign.data.formats.tokenize_pair`` tokenizes a chosen response."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(render_response(tokenizer, prompt, response)[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [False] * len(prompt_ids) + [True] * len(response_ids)


def pack_rows(rows: Sequence[Row], length: int) -> list[Row]:
    """Consecutive rows concatenated into rows of at most ``length`` tokens (a longer row stays alone, whole).

    Packing several short documents into one row spends the compute on tokens rather than on padding; tokens
    of a packed row attend to the earlier documents of the row too, as in ordinary pretraining.
    """
    packed: list[Row] = []
    ids: list[int] = []
    targets: list[bool] = []
    for row_ids, row_targets in rows:
        if ids and len(ids) + len(row_ids) > length:
            packed.append((ids, targets))
            ids, targets = [], []
        ids, targets = ids + row_ids, targets + row_targets
    if ids:
        packed.append((ids, targets))
    return packed


def collate_rows(rows: Sequence[Row], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``target_mask`` (bool), each [len(rows), longest row]."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    target_mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (ids, targets) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        target_mask[i, : len(ids)] = torch.tensor(targets)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "target_mask": target_mask}


def train_next_token(
    model: LlamaForCausalLM,
    rows: Sequence[Row],
    steps: int,
    batch_size: int,
    lr: float,
    pad_token_id: int,
    seed: int,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """``steps`` AdamW steps of ``batch_size`` rows, drawn without replacement in reshuffled passes over ``rows``.

    The learning rate warms up linearly and decays on a cosine to zero. The row order depends on ``seed`` only.
    Batches go to the model's device.
    ``on_step(k)`` is called after step k (1-based). Returns the mean loss of the last tenth of the steps.
    """
    order_rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(WARMUP_FRACTION * steps), num_training_steps=steps)
    model.train()
    order: list[int] = []
    late_losses = []
    for step in range(1, steps + 1):
        while len(order) < batch_size:
            order += torch.randperm(len(rows), generator=order_rng).tolist()
        batch = {k: v.to(model.device) for k, v in collate_rows([rows[i] for i in order[:batch_size]], pad_token_id).items()}
        del order[:batch_size]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logps = label_logprobs(logits, batch["input_ids"])
        loss = -(logps * batch["target_mask"]).sum() / batch["target_mask"].sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step > steps - max(1, steps // 10):
            late_losses.append(loss.item())
        if on_step is not None:
            on_step(step)
    model.eval()
    return sum(late_losses) / len(late_losses)
