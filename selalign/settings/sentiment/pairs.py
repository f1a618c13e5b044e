"""On-policy preference pairs: sample answers from the starting model, rank them with the labeling judge.

For each prompt, ``samples_per_prompt`` answers are sampled from the model (answer j with generation seed
``seed + j``, ``max_new_tokens`` tokens at ``temperature``, through the ``hf`` generator) and scored
by the labeler. ``preference_pair`` makes the best-scored answer the chosen and the worst the rejected response,
when their scores differ by at least ``min_gap``.

The sentiment setting's prepare step writes the sampled rows once into ``<cache_dir>/sentiment/samples-<key>.jsonl``,
one row per prompt::

    {"id": "sentiment-<n>", "prompt": "...", "samples": ["...", ...], "scores": [0.42, ...]}

keyed by the starting model, the prompts, the sampling settings and the labeler's identity; ``min_gap`` is applied
when reading, so changing it costs no sampling.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


from selalign.generators import GenerationCache, Policy, Sampling
from selalign.generators.hf import HFGenerator
from selalign.models import load_causal_lm, load_tokenizer

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


def sample_answers(model_path: str, prompts: Sequence[str], settings: SamplingSettings, labeler: Labeler, out: Path, answers_cache: Path) -> None:
    """Sample ``settings.samples_per_prompt`` answers to each prompt from the model at ``model_path``, score them with
    ``labeler`` and write one row per prompt to ``out`` (see the module docstring). Each answer is kept in
    ``answers_cache`` as it comes (a ``GenerationCache``), so an interrupted build resumes."""
    model, tokenizer = load_causal_lm(model_path), load_tokenizer(model_path)
    policy = Policy.from_config({"name_or_path": model_path, "dtype": "float32"}, model, tokenizer)
    answers = GenerationCache(answers_cache, policy.identity)
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    generator = HFGenerator(batch_size=settings.batch_size)
    samples = [generator.generate(policy, conversations, Sampling(settings.max_new_tokens, settings.temperature, settings.seed + j), answers)
               for j in range(settings.samples_per_prompt)]
    with open(out, "w", encoding="utf-8") as file:
        for n, prompt in enumerate(prompts):
            texts = [samples[j][n] for j in range(settings.samples_per_prompt)]
            file.write(json.dumps({"id": f"sentiment-{n}", "prompt": prompt, "samples": texts, "scores": labeler.score(texts)}, ensure_ascii=False) + "\n")


def preference_pair(row: dict, min_gap: float) -> dict | None:
    """The row's best-scored sample as chosen and its worst as rejected, or None when the scores differ by less
    than ``min_gap`` (or the two texts are the same)."""
    scores = row["scores"]
    best, worst = max(range(len(scores)), key=scores.__getitem__), min(range(len(scores)), key=scores.__getitem__)
    chosen, rejected = row["samples"][best], row["samples"][worst]
    if scores[best] - scores[worst] < min_gap or chosen == rejected or not chosen.strip() or not rejected.strip():
        return None
    return {"id": row["id"], "prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "chosen_score": scores[best], "rejected_score": scores[worst]}
