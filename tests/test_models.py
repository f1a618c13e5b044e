"""Loading models: a missing local folder is named as such; a LoRA policy saved by a run loads for evaluation."""

import pytest

from selalign.models import load_causal_lm, load_tokenizer


@pytest.mark.parametrize("path", ["/does/not/exist", "outputs/runs/2026-01-01_00-00-00/policy", "./policy", "~/models/mine"])
@pytest.mark.parametrize("loader", [load_tokenizer, load_causal_lm])
def test_a_missing_local_folder_is_named_as_one(loader, path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=rf"no model folder at {path!r} \(.*\): it does not exist"):
        loader(path)


def test_an_uncached_hub_id_offline_says_it_cannot_be_fetched(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"no model folder at 'nobody-here/no-such-model' \(.*\), and as a hub id it cannot be fetched offline \(HF_HUB_OFFLINE is set\)"):
        load_tokenizer("nobody-here/no-such-model")


def test_a_lora_policy_saves_its_adapters_and_loads_for_evaluation(tiny_lm, tiny_ref, pairs_file, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from support.configs import compose_train, tiny_overrides
    from selalign.train import train

    run = tmp_path / "run"
    cfg = compose_train(
        *tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none", "optimizer.lr=0.05",
        "model._target_=selalign.settings.sentiment.lora.load_causal_lm_with_lora", "+model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}",
        output_dir=run,
    )
    train(cfg)
    saved = sorted(path.name for path in (run / "policy").iterdir())
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved
    assert "model.safetensors" not in saved  # the adapters, not a full copy of the base weights
    trained = load_causal_lm(str(run / "policy"))  # what `selalign.evaluate model.name_or_path=<run>/policy` loads
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    assert not torch.allclose(trained(ids).logits, base(ids).logits, atol=1e-4), "the adapters should have moved the policy"
    assert load_tokenizer(str(run / "policy")).get_vocab() == load_tokenizer(str(tiny_lm)).get_vocab()


def test_an_empty_model_name_is_named_as_such():
    with pytest.raises(ValueError, match="no model named \\(name_or_path is empty\\)"):
        load_tokenizer("")
