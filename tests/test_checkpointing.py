"""A kill while a checkpoint is being written leaves the previous checkpoint intact."""

import os
import signal
import subprocess
import sys
import time

import torch

from selalign.checkpointing import AtomicCheckpointIO

WRITER = """
import sys, torch
from selalign.checkpointing import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(30_000_000)}, sys.argv[1])
"""


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
