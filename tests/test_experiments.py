"""Experiment configs (conf/experiment/) and launchers: what they compose to, and a parallel sweep run."""

import os
import subprocess
import sys

import hydra
import pytest
from hydra import compose, initialize_config_dir

from support.configs import REPO, compose_train, tiny_overrides
from omegaconf import OmegaConf

from selalign.loggers import method_label, run_name, run_tags, sweep_group
from selalign.report import load_runs
from selalign.train import train

SEEDS = "0,1,2"


# The offline world's files (conf/model/world_small.yaml, ...) replaced by stand-ins: composing reads no model.
WORLD_STAND_INS = ("model=hub", "model.name_or_path=/policy", "ref_model=policy_init", "data=files", "data.path=/pairs.jsonl", "benchmark=none")


def compose_job(*overrides: str, tmp_path, stand_ins=WORLD_STAND_INS):
    """The config of one job, with its ``hydra`` node (sweeper params, launcher, choices)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*stand_ins, *overrides, f"paths.output_dir={tmp_path}"], return_hydra_config=True)


@pytest.mark.parametrize(("experiment", "params"), [
    ("ratio_ablation", {"method.ratio": "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "seed": SEEDS}),
    ("reference_ablation", {"ref_model": "policy_init,world_small_dpo,world_large_dpo", "seed": SEEDS}),
    ("method_comparison", {"method": "start,dpo,distill_kd,dpo_kd,ipo,simpo,robust_dpo,tdpo,selective_dpo,selective_dpo_random,"
                                     "selective_dpo_implicit_reward,tis_dpo", "seed": SEEDS}),
])
def test_experiment_sweeps_its_axes_into_its_own_dir(experiment, params, tmp_path):
    cfg = compose_job(f"experiment={experiment}", tmp_path=tmp_path)
    assert dict(cfg.hydra.sweeper.params) == params
    assert f"/multirun/{experiment}/" in cfg.hydra.sweep.dir
    assert cfg.hydra.runtime.choices.method == "selective_dpo" and cfg.hydra.runtime.choices.scorer == "logp_diff"


@pytest.mark.parametrize("reference", ["policy_init", "world_small_dpo", "world_large_dpo"])
def test_reference_ablation_points_each_reference_at_its_model(reference, tmp_path):
    cfg = compose_job("experiment=reference_ablation", f"ref_model={reference}", f"paths.cache_dir={tmp_path}", tmp_path=tmp_path, stand_ins=())
    ladder = hydra.utils.instantiate(cfg.setting, _convert_="all").ladder_dir()
    expected = ladder / ("world_small" if reference == "policy_init" else reference)  # policy_init: the policy's own start
    assert (cfg.model.name_or_path, cfg.ref_model.name_or_path) == (str(ladder / "world_small"), str(expected))
    assert cfg.teacher_model.name_or_path == str(expected) and not tmp_path.joinpath("world").exists()


@pytest.mark.parametrize(("method", "label", "objective", "scorer"), [
    ("start", "start", "selalign.objectives.Untrained", None),
    ("dpo", "dpo", "selalign.objectives.DPO", None),
    ("distill_kd", "distill_kd", "selalign.objectives.DistillKD", None),
    ("dpo_kd", "dpo_kd", "selalign.objectives.DPOKD", None),
    ("selective_dpo", "selective_dpo", "selalign.objectives.SelectiveDPO", "selalign.scoring.LogpDiff"),
    ("selective_dpo_random", "selective_dpo_random", "selalign.objectives.SelectiveDPO", "selalign.scoring.RandomScore"),
    ("ipo", "ipo", "selalign.objectives.IPO", None),
    ("simpo", "simpo", "selalign.objectives.SimPO", None),
    ("robust_dpo", "robust_dpo", "selalign.objectives.RobustDPO", None),
    ("tdpo", "tdpo", "selalign.objectives.TDPO", None),
    ("selective_dpo_implicit_reward", "selective_dpo_implicit_reward", "selalign.objectives.SelectiveDPO", "selalign.scoring.ImplicitReward"),
    ("tis_dpo", "tis_dpo", "selalign.objectives.TISDPO", "selalign.scoring.LogpDiff"),
])
def test_each_method_of_the_comparison_resolves_to_its_objective_scorer_and_label(method, label, objective, scorer, tmp_path):
    cfg = compose_job("experiment=method_comparison", f"method={method}", tmp_path=tmp_path)
    assert cfg.method._target_ == objective
    assert (cfg.method.scorer._target_ if "scorer" in cfg.method else None) == scorer
    assert method_label(cfg) == label


def test_the_implicit_reward_method_selects_with_the_worlds_small_aligned_pair_and_the_command_line_can_replace_it(tmp_path):
    choices = compose_job("experiment=method_comparison", "method=selective_dpo_implicit_reward", tmp_path=tmp_path).hydra.runtime.choices
    assert (choices.ref_model, choices.selector_model, choices.selector_base_model) == ("policy_init", "world_small_dpo", "world_small")
    elsewhere = compose_job("method=selective_dpo_implicit_reward", "selector_model=hub", "selector_model.name_or_path=/sel",
                            "selector_base_model=hub", "selector_base_model.name_or_path=/base", tmp_path=tmp_path)
    assert (elsewhere.selector_model.name_or_path, elsewhere.selector_base_model.name_or_path) == ("/sel", "/base")
    # The other methods of the comparison leave the selector unset: the reference selects for them.
    assert compose_job("experiment=method_comparison", "method=selective_dpo", tmp_path=tmp_path).hydra.runtime.choices.selector_model is None


def test_an_experiment_with_a_method_override_is_named_grouped_and_reported_as_that_method(tmp_path):
    cfg = compose_job("experiment=smollm2_sentiment", "method=dpo", "ref_model=policy_init", "hydra.mode=MULTIRUN", tmp_path=tmp_path, stand_ins=())
    choices = dict(cfg.hydra.runtime.choices)
    run_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    assert run_name(choices, run_cfg).startswith("dpo-ref=policy_init-")
    assert run_tags(choices, run_cfg)[0] == "method=dpo"
    assert sweep_group(choices, cfg.hydra.sweep.dir).startswith("smollm2_sentiment-")
    job = tmp_path / "job"
    job.mkdir()
    (job / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg))
    (job / "metrics.json").write_text("{}")
    [report_row] = load_runs(tmp_path)
    assert report_row.method == "dpo" and report_row.name.startswith("dpo-")


def test_start_evaluates_the_starting_policy_without_a_step(tiny_lm, tiny_ref, pairs_file, tmp_path):
    overrides = [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "experiment=method_comparison", "method=start", "logger=none", "callbacks=none"]
    metrics = train(compose_train(*overrides, output_dir=tmp_path / "run"))
    assert "val/loss" in metrics and "train/loss" not in metrics


def test_paper_recipe_values(tmp_path):
    cfg = compose_job("experiment=paper_3b_33b", tmp_path=tmp_path, stand_ins=())
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.ref_model, choices.method, choices.scorer, choices.data, choices.trainer, choices.benchmark) == (
        "hub", "hub", "selective_dpo", "logp_diff", "hub", "fsdp", "none")
    assert (cfg.model.name_or_path, cfg.model.gradient_checkpointing, cfg.model.dtype) == ("Qwen/Qwen2.5-3B-Instruct", True, "float32")
    assert (cfg.ref_model.name_or_path, cfg.ref_model.dtype) == ("Qwen/Qwen2.5-32B-Instruct", "bfloat16")
    assert (cfg.method.beta, cfg.method.ratio) == (0.01, 0.4)
    assert cfg.data.name == "Skywork/Skywork-Reward-Preference-80K-v0.2"
    assert (cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.batch_size, cfg.data.eval_batch_size) == (4096, 2048, 4, 8)
    assert (cfg.trainer.devices, cfg.trainer.precision, cfg.trainer.accumulate_grad_batches, cfg.trainer.max_epochs) == (8, "bf16-mixed", 4, 2)
    assert cfg.trainer.devices * cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == 128  # pairs per optimizer step
    assert cfg.trainer.strategy._target_ == "selalign.strategies.FSDPStrategy" and cfg.trainer.strategy.state_dict_type == "sharded"
    assert list(cfg.trainer.strategy.layer_classes) == ["transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer"]
    assert (cfg.trainer.strategy.param_dtype, cfg.trainer.strategy.reduce_dtype) == ("bfloat16", "float32")
    assert cfg.ref_cache is True
    assert cfg.optimizer.lr == 2.0e-7


@pytest.mark.parametrize(("launcher", "target"), [
    ("basic", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launchers_compose(launcher, target, tmp_path):
    cfg = compose_job("experiment=ratio_ablation", f"hydra/launcher={launcher}", tmp_path=tmp_path)
    assert cfg.hydra.launcher._target_ == target


@pytest.mark.slow
def test_parallel_sweep_of_an_experiment_runs_and_reports(tiny_lm, tiny_ref, pairs_file, tmp_path):
    overrides = [
        *tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none",
        "experiment=ratio_ablation", "method.ratio=0.2,1.0", "seed=0",  # the command line narrows the experiment's axes
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    ]
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "selalign.train", "-m", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    [sweep] = (tmp_path / "multirun" / "ratio_ablation").iterdir()
    runs = load_runs(sweep)
    assert [(r.status, r.ratio, r.seed) for r in runs] == [("ok", 0.2, 0), ("ok", 1.0, 0)]
    # The sweep's end writes and prints its report (selalign.report.SweepReport, a Hydra callback).
    assert (sweep / "report.md").exists() and (sweep / "report.png").exists()
    assert "summary: mean ± std over seeds" in result.stdout and str(sweep / "report.md") in result.stdout.replace("\n", "")
