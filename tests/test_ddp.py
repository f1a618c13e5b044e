"""Data-parallel training: per-pair losses are independent of batch mates, and trainer=ddp on two CPU processes
(gloo) takes the same step as one process on the same global batch, with outputs written once."""

import json
import os
import subprocess
import sys
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.configs import tiny_overrides
from support.tiny import toy_pairs, write_jsonl
from selalign.data import PreferenceCollator
from selalign.data.formats import tokenize_pair
from selalign.module import PreferenceModule
from selalign.objectives import DPO, SelectiveDPO

LAUNCH_VARIABLES = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"}


def tokenized_pairs(tokenizer, rows):
    return [{"index": i, **vars(tokenize_pair(tokenizer, row, 512, 256))} for i, row in enumerate(rows)]


def pair_losses(tiny_lm, tiny_ref, objective, rows) -> torch.Tensor:
    """Per-pair losses of ``rows`` in one batch, under the untrained tiny policy and reference."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref), objective, partial(torch.optim.SGD, lr=0.0))
    batch = PreferenceCollator(tokenizer.pad_token_id)(tokenized_pairs(tokenizer, rows))
    with torch.no_grad():
        return module.forward_objective(batch).losses


@pytest.mark.parametrize("objective", [DPO(), SelectiveDPO(ratio=0.4)], ids=["dpo", "selective_dpo"])
def test_loss_of_global_batch_is_mean_of_its_halves(objective, tiny_lm, tiny_ref):
    """Selection is per sequence: a pair's loss does not depend on the other pairs (or the padding they bring)."""
    rows = toy_pairs(4)
    whole = pair_losses(tiny_lm, tiny_ref, objective, rows)
    halves = torch.cat([pair_losses(tiny_lm, tiny_ref, objective, rows[:2]), pair_losses(tiny_lm, tiny_ref, objective, rows[2:])])
    assert torch.allclose(whole, halves, atol=1e-6)
    assert torch.isclose(whole.mean(), (halves[:2].mean() + halves[2:].mean()) / 2, atol=1e-6)


def run_train(*overrides, cwd):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env |= {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tiny_lm, tiny_ref, tmp_path):
    rows = toy_pairs(8)
    train_file, validation_file = write_jsonl(tmp_path / "train.jsonl", rows[:4]), write_jsonl(tmp_path / "validation.jsonl", rows[4:])
    # One step over the whole 4-pair train set: one process takes all 4 pairs, each of two processes takes 2.
    # Plain SGD, so that equal weights after the step mean equal (averaged) gradients.
    common = [
        *tiny_overrides(tiny_lm, tiny_ref, train_file, tmp_path), f"data.validation_path={validation_file}",
        "method=selective_dpo", "trainer.max_steps=1", "optimizer._target_=torch.optim.SGD", "optimizer.lr=0.5",
    ]
    run_train(*common, "data.batch_size=4", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    run_train(*common, "data.batch_size=2", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
              f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert len(list(ddp.rglob("metrics.json"))) == 1 and len([p for p in ddp.rglob("policy") if p.is_dir()]) == 1
    single_metrics, ddp_metrics = json.loads((single / "metrics.json").read_text()), json.loads((ddp / "metrics.json").read_text())
    assert single_metrics.keys() == ddp_metrics.keys()

    initial = load_file(tiny_lm / "model.safetensors")
    single_weights, ddp_weights = load_file(single / "policy" / "model.safetensors"), load_file(ddp / "policy" / "model.safetensors")
    assert any(not torch.equal(single_weights[name], initial[name]) for name in initial)
    for name in initial:
        assert torch.allclose(ddp_weights[name], single_weights[name], atol=1e-6), name

    # Step 1's logged loss: the whole batch's mean in one process; rank 0's half (which half the sampler decides) under DDP.
    losses = pair_losses(tiny_lm, tiny_ref, SelectiveDPO(ratio=0.4), rows[:4])
    assert single_metrics["train/loss"] == pytest.approx(losses.mean().item(), abs=1e-5)
    half_means = [(losses[i] + losses[j]).item() / 2 for i in range(4) for j in range(i + 1, 4)]
    assert any(ddp_metrics["train/loss"] == pytest.approx(mean, abs=1e-5) for mean in half_means)
