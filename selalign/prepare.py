"""Build a setting's artifacts ahead of time: ``python -m selalign.prepare <setting> [overrides ...]``.

    python -m selalign.prepare world                          # the world's model ladder (about 10 minutes on 2 cores)
    python -m selalign.prepare world_tiny setting.world.seed=7
    python -m selalign.prepare sentiment                      # SmolLM2 conversion, sampled pairs, classifier, DPO reference
    python -m selalign.prepare sentiment --only samples classifier
    python -m selalign.prepare world --list                   # where each artifact lives, and whether it is built

Overrides are those of ``python -m selalign.train`` (the setting's recipes are config nodes: ``setting.ladder.sft_steps=200``),
composed on the training config with ``setting=<setting>``. The training job runs the same step for what its config
uses and is missing, so this command is only needed to build ahead of time, or to see what a build will produce.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console

import selalign.resolvers  # noqa: F401  registers ${setting_path:...}
from selalign.settings.base import Setting

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger(__name__)


def prepare_for_run(setting: Setting, cfg: DictConfig) -> list[str]:
    """Build what the run config ``cfg`` uses of ``setting`` and is missing; returns the artifacts built."""
    missing = setting.missing(setting.used_by(cfg))
    if missing:
        Console(stderr=True).print(
            f"setting {setting.name}: building {', '.join(missing)} into {setting.cache_dir} (once; later runs reuse it; "
            f"`python -m selalign.prepare {setting.name}` builds ahead of time)", soft_wrap=True,
        )
    return setting.prepare(missing)


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """The training config composed with ``overrides``, as the CLI composes it (inside or outside a Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selalign.prepare", description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", help="a setting of conf/setting/ (world, world_tiny, sentiment)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training config, e.g. setting.world.seed=3 paths.cache_dir=/data/cache")
    parser.add_argument("--only", nargs="+", metavar="ARTIFACT", help="build only these artifacts (and what they need)")
    parser.add_argument("--list", action="store_true", help="list the artifacts, their paths and whether they are built; build nothing")
    args = parser.parse_args(argv)
    settings = sorted(p.stem for p in (CONF_DIR / "setting").glob("*.yaml"))
    if args.setting not in settings:
        parser.error(f"unknown setting {args.setting!r}; choose one of {settings}")
    cfg = compose_train_config([f"setting={args.setting}", *args.overrides])
    setting: Setting = hydra.utils.instantiate(cfg.setting, _convert_="all")
    artifacts = setting.artifacts()
    unknown = sorted(set(args.only or ()) - set(artifacts))
    if unknown:
        parser.error(f"setting {args.setting} has no artifact {unknown}; it has {sorted(artifacts)}")
    if not args.list:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        setting.prepare(args.only, progress=True)
    width = max(len(name) for name in artifacts)
    for name, path in artifacts.items():  # one line each, never wrapped: paths are for copying
        print(f"{name:<{width}}  {'built  ' if path.exists() else 'missing'}  {path}")


if __name__ == "__main__":
    main()
