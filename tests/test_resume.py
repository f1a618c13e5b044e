"""Runs survive interruptions: stopped mid-epoch (Ctrl-C or SIGKILL), rerun with resume=auto, each step
trains on the pairs the uninterrupted run trains on at that step, under every trainer limit."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from support.configs import REPO, compose_train, tiny_overrides
from support.steps import INTERRUPT_AT_STEP, read_steps, wait_for
from selalign.checkpointing import RunAlreadyComplete
from selalign.train import train


def step_log_overrides(tiny_lm, tiny_ref, pairs_file, root, *trainer):
    """The default trainer (one epoch of 8 steps of 4 pairs) with a checkpoint every 2 steps and a log of each step's pairs."""
    return [
        *tiny_overrides(tiny_lm, tiny_ref, pairs_file, root), "logger=none", "callbacks.progress_bar=null", "trainer.max_steps=-1",
        "checkpoint.every_n_steps=2", "+callbacks.step_log._target_=support.steps.StepLog", "+callbacks.step_log.path=${paths.output_dir}/steps.jsonl",
        *trainer,
    ]


def interrupted_run(overrides, run_dir, step, monkeypatch):
    """Runs ``overrides`` in-process until global step ``step`` is about to start, then interrupts it as Ctrl-C does."""
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setenv(INTERRUPT_AT_STEP, str(step))
    try:
        with pytest.raises(SystemExit):  # Lightning's answer to KeyboardInterrupt
            train(compose_train(*overrides, output_dir=run_dir))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first
        monkeypatch.delenv(INTERRUPT_AT_STEP)
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("trainer, interrupt_at", [
    ([], 5),                                                    # the default: max_epochs=1
    (["trainer.max_epochs=3"], 13),                             # mid second epoch
    (["trainer.max_epochs=2"], 9),                              # checkpoint at the last step of the first epoch
    (["trainer.max_steps=6"], 5),                               # max_steps within the default epoch limit
    (["trainer.max_epochs=-1", "trainer.max_steps=12"], 11),    # steps only
], ids=["default", "max_epochs=3", "epoch_end", "max_steps", "max_steps_no_epoch_limit"])
def test_resume_continues_with_the_next_unseen_batch(trainer, interrupt_at, tiny_lm, tiny_ref, pairs_file, tmp_path, monkeypatch):
    train(compose_train(*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "elsewhere", *trainer), output_dir=tmp_path / "uninterrupted"))
    overrides = step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs", *trainer)
    interrupted_run(overrides, tmp_path / "runs" / "first", interrupt_at, monkeypatch)
    train(compose_train(*overrides, "resume=auto", output_dir=tmp_path / "runs" / "second"))

    uninterrupted, resumed = read_steps(tmp_path / "uninterrupted" / "steps.jsonl"), read_steps(tmp_path / "runs" / "second" / "steps.jsonl")
    assert len({tuple(entry["pairs"]) for entry in uninterrupted.values()}) == len(uninterrupted)  # epochs are shuffled anew
    assert list(resumed) == list(range(interrupt_at - 1, len(uninterrupted)))  # from the checkpoint (every 2 steps) on
    for step, entry in resumed.items():
        assert (entry["epoch"], entry["pairs"]) == (uninterrupted[step]["epoch"], uninterrupted[step]["pairs"]), f"step {step}"
        assert entry["loss"] == pytest.approx(uninterrupted[step]["loss"], abs=1e-6), f"step {step}"


def start_training(overrides, cwd):
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    # Ctrl-C's default action in the child, even where the suite runs in the background of a shell, which ignores SIGINT
    # for its background jobs (and Python keeps an ignored SIGINT ignored).
    return subprocess.Popen([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl_c", "sigkill"])
def test_stopped_mid_epoch_then_resumed_trains_what_the_uninterrupted_run_trains(stop, tiny_lm, tiny_ref, pairs_file, tmp_path):
    """The default trainer (one epoch), a random scorer (its generator is in the checkpoint), stopped from outside."""
    overrides = [*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs"), "scorer=random", "+callbacks.step_log.seconds_per_step=0.3"]
    uninterrupted = train(compose_train(*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "elsewhere"), "scorer=random", output_dir=tmp_path / "uninterrupted"))

    first_dir = tmp_path / "runs" / "first"
    process = start_training([*overrides, f"hydra.run.dir={first_dir}"], cwd=tmp_path)
    wait_for(first_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(stop)
    assert process.wait(timeout=120) != 0
    assert not (first_dir / "metrics.json").exists(), "the run should have been stopped before finishing"
    stopped_at = torch.load(first_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 0 < stopped_at < 8

    second_dir = tmp_path / "runs" / "second"
    process = start_training([*overrides, "resume=auto", f"hydra.run.dir={second_dir}"], cwd=tmp_path)
    assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    assert f"continuing from {first_dir / 'checkpoints' / 'last.ckpt'}" in (second_dir / "train.log").read_text()
    reference, resumed = read_steps(tmp_path / "uninterrupted" / "steps.jsonl"), read_steps(second_dir / "steps.jsonl")
    assert list(resumed) == list(range(stopped_at, 8))
    for step, entry in resumed.items():
        assert entry["pairs"] == reference[step]["pairs"] and entry["loss"] == pytest.approx(reference[step]["loss"], abs=1e-6), f"step {step}"
    final = json.loads((second_dir / "metrics.json").read_text())
    for name in ["train/loss", "val/loss", "val/rewards/margins", "val/selection/score_kept"]:
        assert final[name] == pytest.approx(uninterrupted[name], abs=1e-5), name


def test_resume_auto_without_earlier_run_starts_fresh(tiny_lm, tiny_ref, pairs_file, tmp_path, caplog):
    overrides = [*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs"), "trainer.max_steps=2", "resume=auto"]
    metrics = train(compose_train(*overrides, output_dir=tmp_path / "runs" / "only"))
    assert "train/loss" in metrics


def test_resume_auto_after_a_finished_run_trains_nothing_and_names_its_results(tiny_lm, tiny_ref, pairs_file, tmp_path):
    overrides = [*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs"), "trainer.max_steps=3"]
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    train(compose_train(*overrides, output_dir=first))
    message = (rf"the earlier run of this config in {first} is complete: nothing to resume, nothing trained\. "
               rf"Its results: {first / 'metrics.json'} and the trained policy {first / 'policy'}")
    with pytest.raises(RunAlreadyComplete, match=message) as complete:
        train(compose_train(*overrides, "resume=auto", output_dir=second))
    assert complete.value.run_dir == first
    assert not (second / "metrics.json").exists() and not (second / "steps.jsonl").exists() and not (second / "policy").exists()


def test_resume_auto_picks_the_newest_earlier_run_of_the_config(tiny_lm, tiny_ref, pairs_file, tmp_path, monkeypatch):
    """A finished run, then a rerun stopped mid-way: resume=auto continues the stopped one."""
    overrides = step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path / "runs")
    train(compose_train(*overrides, output_dir=tmp_path / "runs" / "finished"))
    interrupted_run(overrides, tmp_path / "runs" / "stopped", 5, monkeypatch)
    train(compose_train(*overrides, "resume=auto", output_dir=tmp_path / "runs" / "resumed"))
    assert list(read_steps(tmp_path / "runs" / "resumed" / "steps.jsonl")) == [4, 5, 6, 7]


def test_resume_must_be_auto_or_null(tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*step_log_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "resume=sometimes", output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="resume must be null or 'auto', got 'sometimes'"):
        train(cfg)
