"""A callback that logs which pairs each training step took, and can stop a run as Ctrl-C does."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L

INTERRUPT_AT_STEP = "SELALIGN_TEST_INTERRUPT_AT_STEP"  # read from the environment, so the run's config stays the same


class StepLog(L.Callback):
    """Appends ``{"step", "epoch", "pairs", "loss"}`` per training step to ``path``.

    When the environment sets ``SELALIGN_TEST_INTERRUPT_AT_STEP=N``, the step that would start at global step N
    raises ``KeyboardInterrupt`` instead (what Lightning sees on Ctrl-C). ``seconds_per_step`` slows steps down so
    that a test can signal a subprocess mid-epoch.
    """

    def __init__(self, path: str, seconds_per_step: float = 0.0):
        self.path, self.seconds_per_step = Path(path), seconds_per_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if os.environ.get(INTERRUPT_AT_STEP) == str(trainer.global_step):
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        entry = {"step": trainer.global_step - 1, "epoch": trainer.current_epoch, "pairs": list(batch["pair_id"]), "loss": float(outputs["loss"])}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        time.sleep(self.seconds_per_step)


def read_steps(path: Path) -> dict[int, dict]:
    """The step log as {step: entry}."""
    return {entry["step"]: entry for entry in map(json.loads, Path(path).read_text().splitlines())}


def wait_for(path: Path, process, timeout: float = 300) -> None:
    """Block until ``path`` exists; fail if the subprocess ``process`` ends first or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path} appeared:\n{process.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)
