"""Bad configuration, numerics and untrusted code fail early and clearly."""

import functools
import json

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.configs import compose_train, tiny_overrides
from selalign.data import FilesDataModule
from selalign.models import load_causal_lm
from selalign.module import PreferenceModule
from selalign.objectives import DPO
from selalign.train import train


def nan_policy(tiny_lm):
    policy = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        policy.lm_head.weight[0, 0] = float("nan")
    return policy


def fit(module, tiny_lm, pairs_file, steps):
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=4)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    return trainer


def test_nonfinite_steps_are_skipped_and_counted(tiny_lm, tiny_ref, pairs_file):
    policy = nan_policy(tiny_lm)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    module = PreferenceModule(policy, AutoModelForCausalLM.from_pretrained(tiny_ref), DPO(beta=0.1), functools.partial(torch.optim.AdamW, lr=1e-2), max_consecutive_nonfinite=10)
    trainer = fit(module, tiny_lm, pairs_file, steps=3)
    assert module.nonfinite_steps == 3 and trainer.callback_metrics["train/nonfinite_steps"] == 3
    for name, p in policy.named_parameters():  # no update was applied
        assert torch.equal(p, before[name]) or torch.isnan(p).any(), name


def test_consecutive_nonfinite_steps_stop_with_the_pair_ids(tiny_lm, tiny_ref, pairs_file):
    module = PreferenceModule(nan_policy(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref), DPO(beta=0.1), functools.partial(torch.optim.AdamW, lr=1e-2), max_consecutive_nonfinite=2)
    with pytest.raises(FloatingPointError, match=r"non-finite loss in 2 consecutive steps .*offending pairs in the last batch: \['toy-\d+'"):
        fit(module, tiny_lm, pairs_file, steps=5)


@pytest.mark.parametrize("override, message", [
    ("method.beta=0", "method.beta must be > 0"),
    ("method.beta=-1", "method.beta must be > 0"),
    ("method.ratio=0", r"method.ratio must be in \(0, 1\]"),
    ("method.ratio=abc", r"method.ratio must be a number, got 'abc' \(str\)"),
])
def test_config_errors_before_any_model_loads(override, message, tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), override, "model.name_or_path=/does/not/exist", output_dir=tmp_path / "run")
    with pytest.raises(Exception, match=message):
        train(cfg)


def test_ref_cache_with_a_method_without_reference_is_an_error(tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "method=sft", "ref_cache=true", output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="ref_cache=true, but SFT reads no frozen model's log-probs"):
        train(cfg)


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(Exception, match=r"(?s)Could not find 'method/selectve_dpo'.*Available options.*selective_dpo"):
        compose_train("method=selectve_dpo", output_dir=tmp_path)


def test_remote_code_does_not_run_without_trust_remote_code(tiny_lm, tmp_path):
    folder = tmp_path / "remote_code_model"
    AutoModelForCausalLM.from_pretrained(tiny_lm).save_pretrained(folder)
    marker = tmp_path / "remote_code_ran"
    config = json.loads((folder / "config.json").read_text())
    # A model type transformers does not know: only the repository's own code could build it.
    config["model_type"] = "selalign_remote_test"
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'selalign_remote_test'\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    with pytest.raises(Exception, match="trust_remote_code"):
        load_causal_lm(str(folder))
    assert not marker.exists()
    load_causal_lm(str(folder), trust_remote_code=True)  # set explicitly, the repository's code runs
    assert marker.exists()


def test_planted_secrets_never_reach_run_files(tiny_lm, tiny_ref, pairs_file, tmp_path, monkeypatch):
    secret = "sk-planted-4f7c1e9a2b"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    cfg = compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=wandb", "judge.api_key_env=OPENAI_API_KEY", output_dir=run)
    train(cfg)
    files = [path for path in run.rglob("*") if path.is_file()]
    assert any("wandb" in path.parts for path in files), "the offline wandb run should be in the run dir"
    leaking = [str(path) for path in files if secret.encode() in path.read_bytes()]
    assert leaking == []
