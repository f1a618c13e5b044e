"""Answers of a causal LM to chat conversations: batched, left-padded, cached on disk.

A conversation is a list of ``{role, content}`` messages ending with the user message to answer. Its prompt text is
``selalign.data.formats.render_prompt``'s, the text the model continued in training: the tokenizer's chat template
when it has one, the plain ``[bos]User: ...\\nAssistant:`` format otherwise.

Decoding: greedy when ``temperature == 0``, otherwise sampling at ``temperature`` (other sampling settings, such as
``top_p``, come from the model's generation config) from torch's RNG seeded with ``seed`` for the call; the
caller's RNG state (CPU and the model's device) is restored afterwards. A sampled answer depends on the seed and on
which prompts share its batch. An answer ends at the first stop token (the tokenizer's eos and the model's
generation-config eos ids); special tokens and surrounding whitespace are stripped.

``GenerationCache`` keeps answers in a ``KeyedJsonl`` file keyed by a hash of (model identity, rendered prompt,
max_new_tokens, temperature, seed), one line appended per answer, so a repeated or interrupted evaluation
generates only what the file does not hold yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from rich.progress import Progress
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from selalign.data.formats import render_prompt
from selalign.store import KeyedJsonl, content_key

Conversation = Sequence[Mapping[str, str]]


class GenerationCache:
    """Answers of one model (``model_identity``: what makes its outputs what they are) in a JSON Lines file."""

    def __init__(self, path: str | os.PathLike[str], model_identity: Mapping[str, Any]) -> None:
        self._store = KeyedJsonl(path)
        self.path = self._store.path
        self.model_identity = dict(model_identity)

    def __len__(self) -> int:
        return len(self._store)

    def key(self, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> str:
        return content_key({"model": self.model_identity, "prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed})

    def get(self, key: str) -> str | None:
        row = self._store.get(key)
        return None if row is None else row["answer"]

    def put(self, key: str, conversation: Conversation, answer: str) -> None:
        """Append one answer (with the conversation it answers, for reading the file) durably."""
        self._store.put({"key": key, "conversation": [dict(message) for message in conversation], "answer": answer})


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos and every eos id of the model's generation config."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    ids = [*configured, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])]
    return sorted(set(ids))


def _decode_answer(tokenizer: PreTrainedTokenizerBase, new_tokens: list[int], stop_ids: set[int]) -> str:
    end = next((i for i, token in enumerate(new_tokens) if token in stop_ids), len(new_tokens))
    return tokenizer.decode(new_tokens[:end], skip_special_tokens=True).strip()


@torch.inference_mode()
def _generate_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, temperature: float, stop_ids: list[int]
) -> list[str]:
    inputs = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(model.device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, **sampling)
    new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
    return [_decode_answer(tokenizer, tokens, set(stop_ids)) for tokens in new_tokens]


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    cache: GenerationCache | None = None,
    progress: bool = True,
) -> list[str]:
    """The model's answer to each conversation, in order; those in ``cache`` are not generated again.

    Prompts are batched by length (``batch_size`` per ``model.generate`` call) and left-padded; the tokenizer must
    have a pad token (``selalign.models.load_tokenizer`` gives it one). The model is in eval mode while generating
    and back in its previous mode afterwards. ``progress`` shows a progress bar over the prompts generated.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with selalign.models.load_tokenizer (which pads with eos)")
    prompts = [render_prompt(tokenizer, [dict(message) for message in conversation]) for conversation in conversations]
    keys = [cache.key(prompt, max_new_tokens, temperature, seed) if cache is not None else "" for prompt in prompts]
    answers: list[str | None] = [cache.get(key) if cache is not None else None for key in keys]
    pending = sorted((i for i, answer in enumerate(answers) if answer is None), key=lambda i: -len(prompts[i]))
    if not pending:
        return answers  # type: ignore[return-value]

    stop_ids = stop_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    forked = {"devices": []} if model.device.type == "cpu" else {"devices": [model.device], "device_type": model.device.type}
    try:
        with torch.random.fork_rng(**forked), Progress(disable=not progress) as bar:
            torch.manual_seed(seed)
            task = bar.add_task(f"generating {len(pending)} answers", total=len(pending))
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                for i, answer in zip(batch, _generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens, temperature, stop_ids), strict=True):
                    answers[i] = answer
                    if cache is not None:
                        cache.put(keys[i], conversations[i], answer)
                bar.advance(task, len(batch))
    finally:
        model.train(was_training)
    return answers  # type: ignore[return-value]


def answer_turns(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    user_turns: Sequence[Sequence[str]],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    cache: GenerationCache | None = None,
) -> list[list[str]]:
    """One answer per user turn of each conversation (``user_turns[i]``: its user messages, in order).

    Turn k is asked in a conversation that holds the earlier user turns and the model's own answers to them, as
    MT-Bench asks its second question; all conversations' turn k are generated together.
    """
    conversations: list[list[dict[str, str]]] = [[] for _ in user_turns]
    answers: list[list[str]] = [[] for _ in user_turns]
    for turn in range(max((len(turns) for turns in user_turns), default=0)):
        asking = [i for i, turns in enumerate(user_turns) if turn < len(turns)]
        for i in asking:
            conversations[i].append({"role": "user", "content": user_turns[i][turn]})
        replies = generate(model, tokenizer, [conversations[i] for i in asking], max_new_tokens, temperature, batch_size, seed, cache)
        for i, reply in zip(asking, replies, strict=True):
            conversations[i].append({"role": "assistant", "content": reply})
            answers[i].append(reply)
    return answers
