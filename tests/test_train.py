"""The training entry point end to end, as users type it."""

import json
import os
import subprocess
import sys

import pytest

from support.configs import compose_train, tiny_overrides
from support.tiny import build_model, build_tokenizer
from selalign.train import train


def run_train(*overrides, cwd, check=True):
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "selalign.train", *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "selective_dpo"])
def test_cli_run_writes_run_dir(method, tiny_lm, tiny_ref, pairs_file, tmp_path):
    result = run_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"method={method}", "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    summary = result.stdout.replace("\n", " ")  # the run's summary table, printed at the end
    assert "validation reward accuracy" in summary and f"{metrics['val/rewards/accuracies']:.4g}" in summary
    assert "train seconds" in summary and "train tokens per second" in summary
    for name in ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]:
        assert f"train/{name}" in metrics and f"val/{name}" in metrics
    has_selection = "train/selection/kept_chosen" in metrics
    assert has_selection == (method == "selective_dpo")
    assert (run / "config.yaml").exists() and not list(run.rglob("*.ckpt"))  # 2 steps: shorter than the checkpoint interval
    assert (run / "policy" / "config.json").exists() and (run / "policy" / "tokenizer.json").exists()


@pytest.mark.slow
def test_multirun_over_ratios_writes_one_metrics_file_per_job_and_survives_a_failing_job(tiny_lm, tiny_ref, pairs_file, tmp_path):
    run_train("-m", *tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "method.ratio=0.2,1.5,1.0", "hydra.sweep.dir=" + str(tmp_path / "sweep"), cwd=tmp_path)
    sweep = tmp_path / "sweep"
    kept = {job: json.loads((sweep / job / "metrics.json").read_text())["val/selection/kept_chosen"] for job in ("0", "2")}
    assert kept["0"] < 0.4 and kept["2"] == 1.0
    assert not (sweep / "1" / "metrics.json").exists()  # ratio 1.5 fails, the job after it still runs
    assert "method.ratio must be in (0, 1], got 1.5" in (sweep / "1" / "error.txt").read_text()


@pytest.mark.parametrize("ratio", ["0", "-0.5", "1.5"])
def test_ratio_out_of_range_fails_with_clear_message(ratio, tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"method.ratio={ratio}", output_dir=tmp_path)
    with pytest.raises(Exception, match=r"method.ratio must be in \(0, 1\]"):
        train(cfg)


def test_vocabulary_mismatch_fails_before_training(tiny_lm, pairs_file, tmp_path):
    other = tmp_path / "other_vocab"
    build_model(other, build_tokenizer(other, extra_text="zebra quagga okapi " * 50 + "xylophone " * 80))
    cfg = compose_train(*tiny_overrides(tiny_lm, other, pairs_file, tmp_path), output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="does not share the policy's vocabulary") as error:
        train(cfg)
    assert str(other) in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("method, overrides", [
    ("sft", []), ("distill_kd", []), ("distill_skl", []), ("dpo_kd", []), ("ipo", []), ("robust_dpo", ["method.estimator=unbiased"]),
    ("simpo", ["ref_model.name_or_path=/no/such/reference"]),  # reference-free: the reference is never loaded
    ("tdpo", []), ("tis_dpo", []),
    ("selective_dpo_implicit_reward", ["selector_model=hub", "selector_model.name_or_path={tiny_ref}", "selector_base_model=hub", "selector_base_model.name_or_path={tiny_lm}"]),
    ("tis_dpo", ["scorer=implicit_reward", "selector_base_model=hub", "selector_base_model.name_or_path={tiny_lm}"]),
], ids=["sft", "distill_kd", "distill_skl", "dpo_kd", "ipo", "robust_dpo-unbiased", "simpo-no_reference", "tdpo", "tis_dpo",
        "selective_dpo_implicit_reward", "tis_dpo-implicit_reward"])
def test_every_baseline_objective_trains_a_few_steps(method, overrides, tiny_lm, tiny_ref, pairs_file, tmp_path):
    overrides = [override.format(tiny_lm=tiny_lm, tiny_ref=tiny_ref) for override in overrides]
    cfg = compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"method={method}", *overrides, "logger=none", "callbacks=none", output_dir=tmp_path / "run")
    metrics = train(cfg)
    assert metrics["train/loss"] == metrics["train/loss"]  # finite, not NaN
    assert (tmp_path / "run" / "policy" / "config.json").exists()
    if method.startswith("distill"):
        assert metrics["val/distill/kl" if method == "distill_kd" else "val/distill/skew_kl"] > 0
    if method == "tdpo":
        assert metrics["val/kl/chosen"] > 0 and metrics["val/kl/rejected"] > 0
    if method == "tis_dpo":
        assert metrics["val/weights/min"] < 1 < metrics["val/weights/max"]
    if method == "selective_dpo_implicit_reward":
        assert 0 < metrics["val/selection/kept_chosen"] < 1


def test_dpo_kd_without_distillation_equals_dpo(tiny_lm, tiny_ref, pairs_file, tmp_path):
    common = [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none"]
    dpo = train(compose_train(*common, "method=dpo", output_dir=tmp_path / "dpo"))
    dpo_kd = train(compose_train(*common, "method=dpo_kd", "method.kd_weight=0", output_dir=tmp_path / "dpo_kd"))
    for name in ["train/loss", "val/loss", "val/rewards/margins"]:
        assert dpo_kd[name] == pytest.approx(dpo[name], abs=1e-6)


@pytest.mark.slow
def test_help_starts_with_what_selalign_is_and_its_main_groups(tmp_path):
    result = run_train("--help", cwd=tmp_path)
    first_lines = result.stdout.lstrip().splitlines()[:12]
    assert first_lines[0].startswith("selalign: token-selective preference optimization")
    assert any(line.startswith("Main groups: model (the policy), ref_model") for line in first_lines)
    assert "== Configuration groups ==" in result.stdout  # Hydra's own help follows
