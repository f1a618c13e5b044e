"""Build the world's model ladder explicitly: ``python -m selalign.settings.world build [--scale full|tiny] [--cache-dir DIR] [--force]``.

Training jobs build it on first use anyway (``${world_model:...}``); this command does it ahead of time, with a
progress bar, and prints each model's gold accuracy and mean reward on held-out prompts from the manifest.
"""

from __future__ import annotations

import argparse
import json
import os

from rich.console import Console
from rich.table import Table

from selalign.settings.world.generator import World, WorldConfig
from selalign.settings.world.ladder import LADDER_SCALES, MANIFEST_FILE, ensure_ladder

DEFAULT_CACHE_DIR = os.environ.get("SELALIGN_CACHE", "~/.cache/selalign")  # as conf/paths/default.yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selalign.settings.world", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the ladder (tokenizer, world_small, world_small_dpo, world_large_dpo)")
    build.add_argument("--scale", choices=sorted(LADDER_SCALES), default="full")
    build.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="the cache root (paths.cache_dir); default $SELALIGN_CACHE or ~/.cache/selalign")
    build.add_argument("--seed", type=int, default=0, help="the world's seed (world.seed)")
    build.add_argument("--force", action="store_true", help="rebuild even when the ladder is already there")
    args = parser.parse_args(argv)

    folder = ensure_ladder(World(WorldConfig(seed=args.seed)), args.scale, args.cache_dir, force=args.force, progress=True)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    gold = manifest["gold_settings"]
    table = Table("model", "parameters", "gold accuracy", "gold mean reward",
                  title=f"{folder}\ngold: {gold['n_prompts']} held-out prompts, temperature {gold['temperature']}; built in {manifest['build_seconds']:.0f} s")
    for name, model in manifest["models"].items():
        table.add_row(name, f"{model['parameters']:,}", f"{model['gold_accuracy']:.3f}", f"{model['gold_mean_reward']:+.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
