"""``setting=world``: the offline synthetic world, its model ladder, its gold scorer and its held-out prompts."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import Any

from selalign.logprobs import candidate_logprobs
from selalign.settings.base import Setting
from selalign.settings.world.generator import World, WorldConfig
from selalign.settings.world.ladder import LADDER_FOLDERS, LadderRecipe, build_ladder, ladder_dir
from selalign.settings.world.scorer import WorldScorer
from selalign.store import build_once


class WorldSetting(Setting):
    """The world of ``world`` (``WorldConfig`` keys) and the model ladder of ``ladder`` (``LadderRecipe`` keys).

    Artifacts: the ladder's ``tokenizer`` and models (``world_small``, ``world_small_dpo``, ``world_large_sft``,
    ``world_large_dpo``), all in one folder that one build makes (minutes on a CPU at the full recipe), with
    ``build_workers`` processes (1 or 2: the ladder's two chains of models one after the other or at once; the same
    models either way).
    """

    name = "world"

    def __init__(self, cache_dir: str, world: dict[str, Any] | None = None, ladder: dict[str, Any] | None = None, gold: dict[str, Any] | None = None,
                 build_workers: int = 2):
        super().__init__(cache_dir, gold)
        self.world_settings = dict(world or {})
        unknown = sorted(set(self.world_settings) - {f.name for f in dataclasses.fields(WorldConfig)})
        if unknown:
            raise ValueError(f"setting.world has unknown keys {unknown}; the world's keys are {sorted(f.name for f in dataclasses.fields(WorldConfig))}")
        self.world_config = WorldConfig(**self.world_settings)
        self.recipe = LadderRecipe.from_dict(ladder) if ladder is not None else None
        self.build_workers = build_workers

    @cached_property
    def world(self) -> World:
        return World(self.world_config)

    def ladder_dir(self) -> Path:
        if self.recipe is None:
            raise ValueError("this world setting has no ladder recipe (setting.ladder); use setting=world or setting=world_tiny")
        return ladder_dir(self.world, self.recipe, self.cache_dir)

    def artifacts(self) -> dict[str, Path]:
        if self.recipe is None:  # a world without a ladder: its pairs and scorer only (a ladder's own DPO rungs)
            return {}
        folder = self.ladder_dir()
        return {name: folder / name for name in ("tokenizer", *LADDER_FOLDERS)}

    def build(self, name: str, progress: bool = True) -> None:
        self.path(name)  # an unknown name fails here, before a build
        what = f"the world's model ladder (seed {self.world_config.seed}, recipe {self.recipe.key()})"
        build_once(self.ladder_dir(), lambda out, lock: build_ladder(self.world, self.world_settings, self.recipe, out, lock, progress, self.build_workers), what)

    def scorer(self) -> WorldScorer:
        return WorldScorer(self.world)

    def eval_prompts(self, n: int, split: str = "test") -> list[dict[str, Any]]:
        return self.world.eval_prompts(n, split)

    def probe(self, model: Any, tokenizer: Any, split: str = "test", limit: int | None = None) -> dict[str, float]:
        """The knowledge probe: for every held-out question, does the model find the answer sentence stating the gold
        value the most likely among those stating each candidate value of its kind (``World.probe_items``)?

        Deterministic and cheap (no sampling): what the model knows, apart from what it chooses to say. ``limit``
        probes a balanced subset of that many questions (the kinds in turn). Returns ``accuracy`` over the questions
        and ``accuracy/<kind>`` per kind.
        """
        items = self.world.probe_items(split)
        if limit is not None:  # the first questions of every kind in turn: the same balanced subset at every call
            by_kind = [[item for item in items if item["kind"] == kind] for kind in dict.fromkeys(item["kind"] for item in items)]
            items = [kind_items[k] for k in range(max(map(len, by_kind))) for kind_items in by_kind if k < len(kind_items)][:limit]
        was_training = model.training
        model.eval()
        right = {}
        try:
            for item in items:
                scores = candidate_logprobs(model, tokenizer, item["prompt"], item["answers"])
                right.setdefault(item["kind"], []).append(max(range(len(scores)), key=scores.__getitem__) == item["gold"])
        finally:
            model.train(was_training)
        every = [r for kind in right.values() for r in kind]
        return {"accuracy": sum(every) / len(every), **{f"accuracy/{kind}": sum(r) / len(r) for kind, r in right.items()}}
