"""Run names, tags and groups on wandb, and the config it logs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from support.configs import REPO
from selalign.loggers import is_secret_key, run_name, run_tags, sweep_group, wandb_logger, without_secrets


def run_cfg(method: str = "selective_dpo", ratio: float = 0.4, seed: int = 1, ref_path: str = "/models/ref", scorer: str = "LogpDiff", selector_path: str | None = None):
    """The parts of a resolved run config that naming reads."""
    if method == "selective_dpo":
        method_cfg = {"_target_": "selalign.objectives.SelectiveDPO", "ratio": ratio, "scorer": {"_target_": f"selalign.scoring.{scorer}"}}
    else:
        method_cfg = {"_target_": "selalign.objectives.DPO"}
    selector = {"name_or_path": selector_path} if selector_path else None
    return OmegaConf.create({"method": method_cfg, "ref_model": {"name_or_path": ref_path}, "selector_model": selector, "seed": seed})


def test_selective_run_name_has_method_ratio_reference_and_seed():
    choices = {"method": "selective_dpo", "ref_model": "world_large_dpo"}
    assert run_name(choices, run_cfg()) == "selective_dpo-r0.4-ref=world_large_dpo-s1"
    assert run_tags(choices, run_cfg()) == ["method=selective_dpo", "ratio=0.4", "ref=world_large_dpo"]


def test_methods_without_selection_have_no_ratio():
    choices = {"method": "dpo", "ref_model": "policy_init"}
    assert run_name(choices, run_cfg("dpo", seed=0)) == "dpo-ref=policy_init-s0"
    assert run_tags(choices, run_cfg("dpo")) == ["method=dpo", "ref=policy_init"]


def test_the_resolved_scorer_names_the_method_and_hub_reference_is_named_by_its_path():
    choices = {"method": "selective_dpo", "scorer": "random", "ref_model": "hub"}
    cfg = run_cfg(ratio=1.0, seed=2, ref_path="Qwen/Qwen2.5-32B-Instruct", scorer="RandomScore")
    assert run_name(choices, cfg) == "selective_dpo_random-r1-ref=Qwen2.5-32B-Instruct-s2"


def test_the_name_comes_from_the_objective_that_runs_not_from_the_choices():
    # Choices that claim another method (as an experiment's defaults would) do not rename the run.
    assert run_name({"method": "selective_dpo"}, run_cfg("dpo", seed=0, ref_path="/tmp/tiny_ref")) == "dpo-ref=tiny_ref-s0"
    assert run_name({}, run_cfg(scorer="Oracle", ref_path="/tmp/ref")) == "selective_dpo_oracle-r0.4-ref=ref-s1"


def test_objectives_that_load_no_reference_are_not_named_after_one():
    choices = {"ref_model": "world_large_dpo"}
    for target, label in (("SimPO", "simpo"), ("SFT", "sft"), ("Untrained", "start")):
        cfg = OmegaConf.create({"method": {"_target_": f"selalign.objectives.{target}"}, "ref_model": {"name_or_path": "/m/world_large_dpo"},
                                "selector_model": None, "seed": 0})
        assert run_name(choices, cfg) == f"{label}-ref=none-s0" and run_tags(choices, cfg) == [f"method={label}", "ref=none"]
    # distillation's teacher is the reference by default, and TDPO reads the reference's distributions: both name it
    for target in ("DistillKD", "TDPO"):
        cfg = OmegaConf.create({"method": {"_target_": f"selalign.objectives.{target}"}, "ref_model": {"name_or_path": "/m/world_large_dpo"},
                                "selector_model": None, "seed": 0})
        assert run_name(choices, cfg).split("-")[1] == "ref=world_large_dpo"


def test_a_selector_set_apart_from_the_reference_is_named():
    cfg = run_cfg(ref_path="/m/policy_start", selector_path="/m/world_large_dpo")
    assert run_name({"selector_model": "world_large_dpo"}, cfg) == "selective_dpo-r0.4-ref=policy_start-sel=world_large_dpo-s1"
    assert run_tags({}, cfg)[-1] == "sel=world_large_dpo"


def test_one_group_per_sweep_and_none_for_single_runs():
    assert sweep_group({"experiment": "ratio_ablation"}, "outputs/multirun/ratio_ablation/2025-07-01_10-00-00") == "ratio_ablation-2025-07-01_10-00-00"
    assert sweep_group({"experiment": None}, "outputs/multirun/2025-07-01_10-00-00") == "2025-07-01_10-00-00"
    assert sweep_group({"experiment": "ratio_ablation"}, None) is None


@pytest.mark.parametrize("key", ["api_key", "OPENAI_API_KEY", "apiKey", "hf_token", "token", "client_secret", "db_password", "api_key_env"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_new_tokens", "max_tokens", "tokenizer", "name_or_path", "seed"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_secrets_are_masked_at_any_depth():
    config = {"judge": {"api_key": "sk-123", "max_tokens": 64, "headers": [{"auth_token": "abc", "name": "x"}]}, "seed": 0}
    assert without_secrets(config) == {"judge": {"api_key": "***", "max_tokens": 64, "headers": [{"auth_token": "***", "name": "x"}]}, "seed": 0}


def test_logger_in_a_sweep_job_is_named_grouped_tagged_and_logs_no_secret(tiny_lm, pairs_file, tmp_path):
    overrides = [
        "experiment=ratio_ablation", "method.ratio=0.2", "seed=2", "model=hub", f"model.name_or_path={tiny_lm}", "ref_model=policy_init",
        "data=files", f"data.path={pairs_file}", "+data.hf_token=hf_secret", "benchmark=none", "hydra.mode=MULTIRUN", f"paths.output_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True))
    HydraConfig.instance().set_config(cfg)
    try:
        logger = instantiate(cfg.logger.wandb)
    finally:
        HydraConfig.instance().cfg = None
    init = logger._wandb_init  # what wandb.init will get
    assert init["name"] == "selective_dpo-r0.2-ref=policy_init-s2"
    assert init["tags"] == ["method=selective_dpo", "ratio=0.2", "ref=policy_init"]
    assert init["group"] == "ratio_ablation-" + Path(cfg.hydra.sweep.dir).name
    assert init["config"]["data"]["hf_token"] == "***" and init["config"]["method"]["ratio"] == 0.2


def test_each_job_of_a_sweep_in_one_process_gets_its_own_offline_run(tmp_path):
    first = wandb_logger(project="selalign", save_dir=str(tmp_path / "0"), name="job-0")
    first_id = first.experiment.id
    second = wandb_logger(project="selalign", save_dir=str(tmp_path / "1"), name="job-1")
    try:
        assert second.experiment.id != first_id and second.experiment.name == "job-1"
        assert second.experiment.offline
    finally:
        second.experiment.finish()


def test_a_run_prints_no_known_third_party_noise(tiny_lm, tiny_ref, pairs_file, tmp_path, capfd, caplog, recwarn, monkeypatch):
    import logging

    from support.configs import compose_train, tiny_overrides
    from selalign.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    caplog.set_level(logging.INFO)
    train(compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=wandb", "callbacks.progress_bar=null", output_dir=tmp_path / "run"))
    printed = capfd.readouterr()
    text = printed.out + printed.err + caplog.text
    assert "wandb" in text  # wandb did speak (its offline run), just not the noise below
    for noise in ["💡 Tip", "anonymous setting has no effect"]:
        assert noise not in text, noise
    warned = [f"{w.filename}:{w.message}" for w in recwarn]
    assert not [w for w in warned if "deprecat" in w.lower() and "/selalign/" not in w], warned
    assert not [w for w in warned if "in eval mode at the start of training" in w], warned
