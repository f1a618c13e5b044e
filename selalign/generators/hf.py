"""``generator=hf``: batched ``generate`` of transformers on the in-memory policy (CPU or one GPU), offline.

Prompts are rendered with ``selalign.data.formats.render_prompt``, sorted longest first, left-padded and decoded
``batch_size`` at a time with ``model.generate`` (static batches: a batch decodes until its longest answer ends).
Decoding is greedy at temperature 0, otherwise sampled from torch's RNG seeded with ``seed`` for the call; the
caller's RNG state (CPU and the model's device) is restored afterwards. An answer ends at the first stop token
(``stop_token_ids``). The model is in eval mode while generating and back in its previous mode afterwards.

``generate(model, tokenizer, conversations, max_new_tokens, ...)`` is the same generation in one call for code that
holds a model and a tokenizer rather than a ``Policy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.progress import Progress
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from selalign.data.formats import render_prompt
from selalign.generators.base import Conversation, Generator, Policy, Sampling
from selalign.generators.cache import GenerationCache


def stop_token_ids(generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos and every eos id of the model's generation config."""
    configured = getattr(generation_config, "eos_token_id", None)
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    ids = [*configured, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])]
    return sorted(set(ids))


def _decode_answer(tokenizer: PreTrainedTokenizerBase, new_tokens: list[int], stop_ids: set[int]) -> str:
    end = next((i for i, token in enumerate(new_tokens) if token in stop_ids), len(new_tokens))
    return tokenizer.decode(new_tokens[:end], skip_special_tokens=True).strip()


@torch.inference_mode()
def _generate_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, temperature: float, stop_ids: list[int]
) -> tuple[list[str], int]:
    """(the answers, the number of new tokens generated, padding aside)."""
    inputs = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(model.device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, **sampling)
    new = output[:, inputs["input_ids"].shape[1] :]
    return [_decode_answer(tokenizer, tokens, set(stop_ids)) for tokens in new.tolist()], int((new != tokenizer.pad_token_id).sum())


class HFGenerator(Generator):
    """``batch_size`` prompts per ``model.generate`` call; ``progress`` shows a bar over the prompts generated."""

    needs_model = True
    needs_tokenizer = True

    def __init__(self, batch_size: int = 8, progress: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.progress = progress

    def __repr__(self) -> str:
        return f"HFGenerator(batch_size={self.batch_size})"

    @property
    def identity(self) -> dict[str, Any]:
        return {"engine": "hf"}

    def generate_uncached(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, on_answer: Callable[[int, str], None]) -> None:
        model, tokenizer = policy.model, policy.tokenizer
        if model is None or tokenizer is None:
            raise ValueError("generator=hf decodes with the policy in memory: give the Policy its model and tokenizer")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load it with selalign.models.load_tokenizer (which pads with eos)")
        prompts = [render_prompt(tokenizer, [dict(message) for message in conversation]) for conversation in conversations]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        stop_ids = stop_token_ids(model.generation_config, tokenizer)
        was_training = model.training
        model.eval()
        forked = {"devices": []} if model.device.type == "cpu" else {"devices": [model.device], "device_type": model.device.type}
        try:
            with torch.random.fork_rng(**forked), Progress(disable=not self.progress) as bar:
                torch.manual_seed(sampling.seed)
                task = bar.add_task(f"generating {len(prompts)} answers", total=len(prompts))
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    replies, tokens = _generate_batch(model, tokenizer, [prompts[i] for i in batch], sampling.max_new_tokens, sampling.temperature, stop_ids)
                    self.generated_tokens += tokens
                    for i, answer in zip(batch, replies, strict=True):
                        on_answer(i, answer)
                    bar.advance(task, len(batch))
        finally:
            model.train(was_training)

