"""The ``world_model`` config resolver: the folder of a ladder model, built on first use.

``${world_model:NAME,SEED,SCALE,CACHE_DIR}`` resolves to ``<CACHE_DIR>/world/<version>-<fingerprint>-<SCALE>/NAME``
for the world of seed SEED (default config otherwise), building the whole ladder there first when it is missing
(minutes at the ``full`` scale, once; a message says so). NAME is one of ``LADDER_MODELS``. The model configs
pass the top-level ``world.seed``, ``world.scale`` and ``paths.cache_dir``::

    name_or_path: ${world_model:world_small,${world.seed},${world.scale},${paths.cache_dir}}
"""

from __future__ import annotations

from omegaconf import OmegaConf

from selalign.settings.world.generator import World, WorldConfig
from selalign.settings.world.ladder import LADDER_MODELS, ensure_ladder

RESOLVER = "world_model"


def world_model_path(name: str, seed: int, scale: str, cache_dir: str) -> str:
    if name not in LADDER_MODELS:
        raise ValueError(f"${{{RESOLVER}:...}} names no ladder model: {name!r}; choose one of {list(LADDER_MODELS)}")
    folder = ensure_ladder(World(WorldConfig(seed=int(seed))), str(scale), str(cache_dir), progress=True)
    return str(folder / name)


def register_world_resolver() -> None:
    """Make ``${world_model:...}`` known to OmegaConf (once per process)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, world_model_path)
