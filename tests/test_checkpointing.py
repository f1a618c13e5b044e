"""Checkpoints: atomic writes, none for runs shorter than the interval, none left behind by a finished run unless kept."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from support.configs import compose_train, tiny_overrides
from selalign.checkpointing import AtomicCheckpointIO
from selalign.train import train

WRITER = """
import sys, torch
from selalign.checkpointing import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(30_000_000)}, sys.argv[1])
"""


@pytest.mark.slow
def test_sigkill_during_write_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "weights": torch.ones(10)}, target)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.time() + 120
    while not any(path.name.endswith(".partial") for path in tmp_path.iterdir()):  # the new checkpoint is being written
        assert process.poll() is None and time.time() < deadline, "the writer ended before it was caught writing"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    previous = torch.load(target, weights_only=True)
    assert previous["step"] == 1 and torch.equal(previous["weights"], torch.ones(10))


def test_checkpoint_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 7, "weights": torch.arange(5)}, tmp_path / "sub" / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt")
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], torch.arange(5))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.ckpt"]


def short_run_overrides(tiny_lm, tiny_ref, pairs_file, root, *extra):
    return [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, root), "logger=none", "callbacks.progress_bar=null", "callbacks.selection_pictures=null", *extra]


@pytest.mark.parametrize("callbacks", [[], ["callbacks=none", "logger=csv"]], ids=["default", "no_callbacks"])
def test_a_run_shorter_than_the_checkpoint_interval_writes_no_checkpoint(callbacks, tiny_lm, tiny_ref, pairs_file, tmp_path):
    """Neither a last.ckpt at the end nor, without the checkpoint callback, Lightning's own epoch checkpoint."""
    run = tmp_path / "run"
    overrides = [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "trainer.max_steps=3", *callbacks]
    train(compose_train(*overrides, output_dir=run))
    assert (run / "policy" / "config.json").exists() and (run / "metrics.json").exists()
    assert not list(run.rglob("*.ckpt"))


@pytest.mark.parametrize("keep", [False, True])
def test_a_finished_run_drops_its_resume_checkpoint_unless_kept(keep, tiny_lm, tiny_ref, pairs_file, tmp_path):
    run = tmp_path / "run"
    overrides = short_run_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path, "trainer.max_steps=3", "checkpoint.every_n_steps=2", f"checkpoint.keep={keep}")
    train(compose_train(*overrides, output_dir=run))
    assert (run / "checkpoints" / "last.ckpt").exists() == keep
    if keep:
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        assert checkpoint["global_step"] == 2 and checkpoint["optimizer_states"]  # what resuming needs

