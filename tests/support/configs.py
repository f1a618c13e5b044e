"""The real training config, composed the way the CLI composes it, shrunk for tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def compose_train(*overrides: str, output_dir: Path):
    """The real training config, composed as the CLI would, with this run's output dir set."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def tiny_overrides(tiny_lm: Path, tiny_ref: Path, pairs_file: Path, root: Path) -> list[str]:
    """Overrides that shrink the default job to tiny models, a tiny file and two steps."""
    return [
        "model=hub", f"model.name_or_path={tiny_lm}", "ref_model=hub", f"ref_model.name_or_path={tiny_ref}",
        "data=files", f"data.path={pairs_file}", "data.validation_fraction=0.2", "data.batch_size=4",
        "benchmark=none", "logger=csv", "trainer.max_steps=2", f"paths.root_dir={root}",
    ]
