"""On-policy preference pairs: sample answers from the starting model, rank them with the labeling judge.

For each prompt, ``samples_per_prompt`` answers are sampled from the model (answer j with generation seed
``seed + j``, ``max_new_tokens`` tokens at ``temperature``, through ``selalign.generation.generate``) and scored
by the labeler. ``preference_pair`` makes the best-scored answer the chosen and the worst the rejected response,
when their scores differ by at least ``min_gap``.

The sampled rows are cached in ``<cache_dir>/sentiment/samples-<key>.jsonl``, one row per prompt::

    {"id": "sentiment-<n>", "prompt": "...", "samples": ["...", ...], "scores": [0.42, ...]}

keyed by the model's identity (its folder's files), the prompts, the sampling settings and the labeler's
identity; ``min_gap`` is applied when reading, so changing it costs no sampling. While the file is built, each
answer is kept in ``<file>.answers.jsonl`` (a ``GenerationCache``), so an interrupted build resumes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


from selalign.generators.hf import GenerationCache, generate
from selalign.models import load_causal_lm, load_tokenizer
from selalign.store import build_once, content_key, model_identity

log = logging.getLogger(__name__)

# Raise when the sampled rows change for the same settings: files of older versions are then left unused.
SAMPLES_VERSION = 1


class Labeler(Protocol):
    identity: dict[str, Any]

    def score(self, texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class SamplingSettings:
    """How answers are sampled; ``batch_size`` prompts per ``generate`` call (it changes which answers come out)."""

    samples_per_prompt: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ValueError(f"a pair needs at least 2 samples per prompt, got {self.samples_per_prompt}")
        if self.temperature <= 0:
            raise ValueError(f"sampling needs a temperature > 0, got {self.temperature} (greedy answers are all the same)")


def sampled_rows(model_path: str, prompts: Sequence[str], settings: SamplingSettings, labeler: Labeler, cache_dir: str | os.PathLike[str]) -> list[dict]:
    """One row per prompt (see the module docstring), read from the cache or sampled and labeled into it."""
    identity = model_identity({"name_or_path": model_path, "dtype": "float32"})
    key = content_key({"version": SAMPLES_VERSION, "model": identity, "prompts": list(prompts), "sampling": asdict(settings), "labeler": labeler.identity})
    path = Path(cache_dir).expanduser() / "sentiment" / f"samples-{key[:16]}.jsonl"

    def sample_into(out: Path, _) -> None:
        model, tokenizer = load_causal_lm(model_path), load_tokenizer(model_path)
        answers = GenerationCache(path.with_name(path.name + ".answers.jsonl"), identity)
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        samples = [
            generate(model, tokenizer, conversations, settings.max_new_tokens, settings.temperature, settings.batch_size, settings.seed + j, answers)
            for j in range(settings.samples_per_prompt)
        ]
        with open(out, "w", encoding="utf-8") as file:
            for n, prompt in enumerate(prompts):
                texts = [samples[j][n] for j in range(settings.samples_per_prompt)]
                file.write(json.dumps({"id": f"sentiment-{n}", "prompt": prompt, "samples": texts, "scores": labeler.score(texts)}, ensure_ascii=False) + "\n")

    what = f"{settings.samples_per_prompt} answers to each of {len(prompts)} prompts from {model_path}"
    with open(build_once(path, sample_into, what), encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def preference_pair(row: dict, min_gap: float) -> dict | None:
    """The row's best-scored sample as chosen and its worst as rejected, or None when the scores differ by less
    than ``min_gap`` (or the two texts are the same)."""
    scores = row["scores"]
    best, worst = max(range(len(scores)), key=scores.__getitem__), min(range(len(scores)), key=scores.__getitem__)
    chosen, rejected = row["samples"][best], row["samples"][worst]
    if scores[best] - scores[worst] < min_gap or chosen == rejected or not chosen.strip() or not rejected.strip():
        return None
    return {"id": row["id"], "prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "chosen_score": scores[best], "rejected_score": scores[worst]}
