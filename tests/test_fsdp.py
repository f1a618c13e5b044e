"""Sharded training (trainer=fsdp: FSDP2 through Lightning's ModelParallelStrategy) on two CPU processes (gloo):
the same policy as one process on the same global batch, checkpoints (full and sharded) that resume exactly after a
kill, and a policy folder that loads with from_pretrained."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from support.configs import tiny_overrides
from support.steps import wait_for
from support.tiny import toy_pairs, write_jsonl

LAUNCH_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"}
FSDP_ON_CPU = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.strategy.param_dtype=null",
               "trainer.strategy.reduce_dtype=null"]


def environment():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return env | {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_train(*overrides, cwd):
    result = subprocess.run([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def files(tiny_lm, tiny_ref, tmp_path, pairs=4):
    rows = toy_pairs(pairs + 4)
    train_file, validation_file = write_jsonl(tmp_path / "train.jsonl", rows[:pairs]), write_jsonl(tmp_path / "validation.jsonl", rows[pairs:])
    return [*tiny_overrides(tiny_lm, tiny_ref, train_file, tmp_path), f"data.validation_path={validation_file}", "method=selective_dpo"]


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_the_policy_one_process_trains(tiny_lm, tiny_ref, tmp_path):
    """Three steps of Selective-DPO with a live reference over a 4-pair train set (each step the whole set: one process
    takes 4 pairs, each of two FSDP processes 2), plain SGD: equal weights mean equal averaged gradients. Tolerance
    1e-5 (float32; the two processes' gradients are summed in another order)."""
    common = [*files(tiny_lm, tiny_ref, tmp_path), "callbacks=none", "trainer.max_steps=3", "trainer.max_epochs=3", "optimizer._target_=torch.optim.SGD",
              "optimizer.lr=0.5", f"paths.cache_dir={tmp_path / 'cache'}"]
    run_train(*common, "data.batch_size=4", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    run_train(*common, "data.batch_size=2", *FSDP_ON_CPU, f"hydra.run.dir={tmp_path / 'fsdp'}", cwd=tmp_path)
    # The reference cache built by the two processes, each its share, with the sharded reference: the same training.
    run_train(*common, "data.batch_size=2", *FSDP_ON_CPU, "ref_cache=true", f"hydra.run.dir={tmp_path / 'fsdp_cached'}", cwd=tmp_path)
    assert [path.name for path in (tmp_path / "cache" / "logps").iterdir()] == [next((tmp_path / "cache" / "logps").glob("*.pt")).name]

    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    assert len(list(fsdp.rglob("metrics.json"))) == 1 and len([p for p in fsdp.rglob("policy") if p.is_dir()]) == 1
    single_metrics, fsdp_metrics = json.loads((single / "metrics.json").read_text()), json.loads((fsdp / "metrics.json").read_text())
    assert fsdp_metrics["val/loss"] == pytest.approx(single_metrics["val/loss"], abs=1e-5)
    initial = load_file(tiny_lm / "model.safetensors")
    single_weights, fsdp_weights = load_file(single / "policy" / "model.safetensors"), load_file(fsdp / "policy" / "model.safetensors")
    assert single_weights.keys() == fsdp_weights.keys() == initial.keys()
    assert max((single_weights[name] - initial[name]).abs().max() for name in initial) > 1e-2  # three real steps
    for name in initial:
        torch.testing.assert_close(fsdp_weights[name], single_weights[name], atol=1e-5, rtol=0, msg=name)
    loaded = AutoModelForCausalLM.from_pretrained(fsdp / "policy")  # a plain folder of the whole policy
    torch.testing.assert_close(loaded.lm_head.weight, fsdp_weights["lm_head.weight"])
    cached_weights = load_file(tmp_path / "fsdp_cached" / "policy" / "model.safetensors")
    for name in initial:
        torch.testing.assert_close(cached_weights[name], fsdp_weights[name], atol=1e-5, rtol=0, msg=name)


def start_training(overrides, cwd):
    return subprocess.Popen([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_when(path, process, timeout=300):
    """SIGKILL ``process`` and the processes it started as soon as ``path`` exists."""
    wait_for(path, process, timeout)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tiny_lm, tiny_ref, tmp_path_factory):
    """An FSDP run of 12 steps (AdamW), its run directory and its overrides."""
    root = tmp_path_factory.mktemp("uninterrupted")
    overrides = [*files(tiny_lm, tiny_ref, root, pairs=8), "trainer.max_steps=12", "trainer.max_epochs=-1", "checkpoint.every_n_steps=2",
                 "optimizer.lr=1e-2", "data.batch_size=2", *FSDP_ON_CPU, "logger=none", "callbacks.progress_bar=null", "callbacks.selection_pictures=null"]
    run_train(*overrides, f"hydra.run.dir={root / 'run'}", cwd=root)
    return root / "run", overrides


@pytest.mark.slow
@pytest.mark.parametrize("state_dict_type", ["full", "sharded"])
def test_fsdp_checkpoints_resume_a_killed_run_exactly(state_dict_type, uninterrupted, tmp_path):
    reference_run, overrides = uninterrupted
    overrides = [*overrides, f"trainer.strategy.state_dict_type={state_dict_type}", f"paths.root_dir={tmp_path / 'runs'}"]
    first = tmp_path / "runs" / "first"
    process = start_training([*overrides, f"hydra.run.dir={first}"], cwd=tmp_path)
    kill_when(first / "checkpoints" / "last.ckpt", process)
    assert not (first / "metrics.json").exists(), "the run should have been killed before finishing"
    checkpoint = first / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir() == (state_dict_type == "sharded")
    if state_dict_type == "sharded":
        assert len(list(checkpoint.glob("*.distcp"))) == 2  # a shard per process

    second = tmp_path / "runs" / "second"
    run_train(*overrides, "resume=auto", f"hydra.run.dir={second}", cwd=tmp_path)
    assert f"continuing from {checkpoint}" in (second / "train.log").read_text()
    resumed, expected = load_file(second / "policy" / "model.safetensors"), load_file(reference_run / "policy" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], atol=1e-6, rtol=0, msg=name)
    resumed_metrics, expected_metrics = (json.loads((run / "metrics.json").read_text()) for run in (second, reference_run))
    assert resumed_metrics["val/loss"] == pytest.approx(expected_metrics["val/loss"], abs=1e-6)
