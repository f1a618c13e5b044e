"""The bare training job is Selective-DPO on the world against world_large_dpo, then the world's gold evaluation."""

from pathlib import Path

import pytest

from support.configs import compose_train
from selalign.train import train


def world_job_overrides(cache: Path, root: Path) -> list[str]:
    """The default job on the tiny ladder of the seed-7 world, shrunk to two steps and a few prompts."""
    return [
        "setting=world_tiny", "setting.world.seed=7", f"paths.cache_dir={cache}", f"paths.root_dir={root}", "logger=none",
        "trainer.max_steps=2", "data.train_pairs=16", "data.validation_pairs=8", "data.batch_size=4",
    ]


SMALL_GOLD = ("benchmark.n_prompts=4", "benchmark.max_new_tokens=8")


def test_default_job_trains_against_the_large_reference_and_scores_gold(tiny_ladder, ladder_cache, tmp_path):
    cfg = compose_train(*world_job_overrides(ladder_cache, tmp_path), *SMALL_GOLD, output_dir=tmp_path / "run")
    assert cfg.method._target_ == "selalign.objectives.SelectiveDPO" and cfg.method.ratio == 0.4
    assert Path(cfg.model.name_or_path) == tiny_ladder / "world_small"
    assert Path(cfg.ref_model.name_or_path) == tiny_ladder / "world_large_dpo"
    metrics = train(cfg)
    assert metrics["train/loss"] == metrics["train/loss"]  # finite, not NaN
    assert 0.0 <= metrics["val/selection/precision"] <= 1.0 and 0.0 < metrics["val/oracle/decisive_share"] < 1.0
    assert 0.0 <= metrics["gold/win_rate"] <= 1.0 and 0.0 <= metrics["gold/accuracy"] <= 1.0
    assert metrics["gold/accuracy"] + metrics["gold/wrong"] + metrics["gold/no_value"] == pytest.approx(1.0)
    assert -1.75 <= metrics["gold/start_mean_reward"] <= 1.0 and 0.0 <= metrics["gold/probe/accuracy"] <= 1.0
    assert (tmp_path / "run" / "gold_generations.jsonl").exists() and (tmp_path / "run" / "gold_scores.jsonl").exists()


def test_the_main_job_prepares_what_its_config_uses_when_it_is_missing(tmp_path):
    cache = tmp_path / "empty_cache"
    cfg = compose_train(*world_job_overrides(cache, tmp_path), "benchmark=none", output_dir=tmp_path / "run")
    assert not cache.exists()
    train(cfg)
    folders = [p for p in (cache / "world").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "world_large_dpo" / "config.json").exists()


def test_the_teacher_follows_the_reference(tmp_path):
    cfg = compose_train("ref_model=world_small_dpo", "ref_model.name_or_path=/models/other", output_dir=tmp_path)
    assert cfg.teacher_model.name_or_path == "/models/other"
