"""Runs survive kills: SIGKILL mid-run, restart with resume=auto, end where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from support.configs import compose_train, tiny_overrides
from selalign.train import train


def resume_overrides(tiny_lm, tiny_ref, pairs_file, root, scorer="logp_diff"):
    return [
        *tiny_overrides(tiny_lm, tiny_ref, pairs_file, root), "logger=none", "trainer.max_steps=24", "trainer.max_epochs=-1",
        "checkpoint.every_n_steps=2", f"scorer={scorer}", "callbacks.progress_bar=null",
    ]


def start_training(overrides, cwd):
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path, process, timeout=300):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path} appeared:\n{process.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("scorer", ["random"])
def test_sigkill_then_resume_matches_uninterrupted_run(scorer, tiny_lm, tiny_ref, pairs_file, tmp_path):
    overrides = resume_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs", scorer)
    uninterrupted = train(compose_train(*overrides, output_dir=tmp_path / "reference_run"))

    first_dir = tmp_path / "runs" / "first"
    process = start_training([*overrides, f"hydra.run.dir={first_dir}"], cwd=tmp_path)
    wait_for(first_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (first_dir / "metrics.json").exists(), "the run should have been killed before finishing"
    killed_at = torch.load(first_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 0 < killed_at < 24

    second_dir = tmp_path / "runs" / "second"
    result = subprocess.run([sys.executable, "-m", "selalign.train", *overrides, "resume=auto", f"hydra.run.dir={second_dir}"],
                            cwd=tmp_path, env=dict(os.environ, WANDB_MODE="offline"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"continuing from {first_dir / 'checkpoints' / 'last.ckpt'}" in (second_dir / "train.log").read_text()
    resumed = json.loads((second_dir / "metrics.json").read_text())
    for name in ["train/loss", "val/loss", "val/rewards/margins", "val/selection/score_kept"]:
        assert resumed[name] == pytest.approx(uninterrupted[name], abs=1e-5), name


def test_resume_auto_without_earlier_run_starts_fresh(tiny_lm, tiny_ref, pairs_file, tmp_path, caplog):
    overrides = [*resume_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs"), "trainer.max_steps=2", "resume=auto"]
    metrics = train(compose_train(*overrides, output_dir=tmp_path / "runs" / "only"))
    assert "train/loss" in metrics


def test_resume_must_be_auto_or_null(tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*resume_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "resume=sometimes", output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="resume must be null or 'auto', got 'sometimes'"):
        train(cfg)
