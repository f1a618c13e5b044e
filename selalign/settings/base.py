"""The shape every setting shares: where pairs, models and a gold scorer come from.

A setting has four pieces:

- a **datamodule** (``conf/data/<setting>.yaml``): rows -> batches through the shared pipeline (the setting supplies
  rows and, where it can, the decisive-token spans);
- a **gold scorer** (``Setting.scorer()``): ``score(prompts, responses) -> GoldScores``, the reward of every answer
  and, per answer, whatever breakdown the setting offers; it scores any text, so one shared evaluation
  (``selalign.benchmarks.gold.GoldEvaluation``) serves every setting;
- a **prepare step** (``Setting.prepare``; ``python -m selalign.prepare <setting>``): builds once, into the shared
  cache, the artifacts the setting's configs point at (models, sampled pairs, classifiers), from recipes that are
  config nodes; ``Setting.artifacts()`` says where each lives without building anything, so configs only look
  paths up (``${setting_path:NAME}``);
- a **config node** (``conf/setting/<setting>.yaml``): the setting's own keys, under ``setting:``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GoldScores:
    """A gold scorer's reading of N answers, in order.

    ``rewards`` [N]: the scalar reward of each answer. ``breakdown``: named per-answer values (floats, or None where
    a value does not apply to an answer, e.g. ``accuracy/colour`` on an arithmetic question); the evaluation reports
    the mean of each over the answers it applies to.
    """

    rewards: list[float]
    breakdown: dict[str, list[float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.breakdown.items():
            if len(values) != len(self.rewards):
                raise ValueError(f"breakdown {name!r} has {len(values)} values for {len(self.rewards)} answers")


class GoldScorer:
    """Scores any answer to one of the setting's prompts. Subclasses implement ``score``."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> GoldScores:
        raise NotImplementedError


class Setting:
    """Base of the ``setting`` config group. Subclasses implement ``artifacts``, ``build``, ``scorer`` and ``eval_prompts``.

    ``cache_dir`` is the shared cache (``paths.cache_dir``); ``gold`` holds the setting's defaults of the gold
    evaluation (``conf/benchmark/gold.yaml`` reads them). Constructing a setting builds nothing.
    """

    name: str = ""

    def __init__(self, cache_dir: str, gold: dict[str, Any] | None = None):
        self.cache_dir = Path(cache_dir).expanduser()
        self.gold = dict(gold or {})

    def artifacts(self) -> dict[str, Path]:
        """Every artifact the prepare step can build: name -> path. Pure look-up."""
        raise NotImplementedError

    def path(self, name: str) -> Path:
        artifacts = self.artifacts()
        if name not in artifacts:
            raise ValueError(f"setting {self.name!r} has no artifact {name!r}; it has {sorted(artifacts)}")
        return artifacts[name]

    def build(self, name: str, progress: bool = True) -> None:
        """Build artifact ``name`` (and what it needs first) into ``path(name)``."""
        raise NotImplementedError

    def scorer(self) -> GoldScorer:
        raise NotImplementedError

    def eval_prompts(self, n: int, split: str = "test") -> list[dict[str, Any]]:
        """``n`` held-out prompts for the gold evaluation: dicts with ``id`` and ``prompt`` (plus whatever the setting adds)."""
        raise NotImplementedError

    def probe(self, model: Any, tokenizer: Any, split: str = "test", limit: int | None = None) -> dict[str, float]:
        """A deterministic measurement of what ``model`` knows, where the setting has one (e.g. the world's knowledge
        probe), on at most ``limit`` of its items; name -> value. Default: none."""
        return {}

    def missing(self, names: Sequence[str] | None = None) -> list[str]:
        """The artifacts among ``names`` (default: all) that are not built yet."""
        artifacts = self.artifacts()
        return [name for name in (names if names is not None else artifacts) if not self.path(name).exists()]

    def used_by(self, run_cfg: DictConfig) -> list[str]:
        """The artifacts whose paths a (resolvable) run config refers to, in the order ``artifacts`` lists them."""
        values = _strings(OmegaConf.to_container(run_cfg, resolve=True))
        return [name for name, path in self.artifacts().items() if any(value == str(path) or value.startswith(f"{path}/") for value in values)]

    def prepare(self, names: Sequence[str] | None = None, progress: bool = True) -> list[str]:
        """Build the missing artifacts among ``names`` (default: all); returns those built."""
        todo = self.missing(names)
        for name in todo:
            if self.path(name).exists():  # built as a dependency of an earlier one
                continue
            log.info("setting %s: building %s into %s", self.name, name, self.path(name))
            self.build(name, progress=progress)
        return todo


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def setting_of(root: DictConfig) -> Setting:
    """The ``Setting`` of a composed config (its ``setting`` node), or an error naming what to set."""
    import hydra

    node = root.get("setting")
    if not node:
        raise ValueError("this config refers to a setting's artifact (${setting_path:...}) but selects no setting; add setting=world or setting=sentiment")
    return hydra.utils.instantiate(node, _convert_="all")
