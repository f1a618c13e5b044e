"""The ladder of world models: built once by the setting's prepare step, deterministically, into a folder of its world and recipe."""

import dataclasses
import json
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.prepare import main as prepare_cli
from selalign.settings.world import LADDER_MODELS, WORLD_VERSION, World, WorldConfig, WorldSetting, build_ladder, ladder_dir
from selalign.settings.world import setting as setting_module
from selalign.settings.world.ladder import MANIFEST_FILE


def manifest(folder):
    return json.loads((folder / MANIFEST_FILE).read_text())


def without_timings(entry):
    """A manifest without its wall-clock fields."""
    entry = dict(entry, stages=[{k: v for k, v in s.items() if k != "seconds"} for s in entry["stages"]])
    entry.pop("build_seconds")
    return entry


def test_prepare_builds_every_artifact_into_the_folder_of_world_and_recipe(tiny_ladder, tiny_world_setting, ladder_cache, world):
    assert tiny_ladder == ladder_dir(world, tiny_world_setting.recipe, ladder_cache)
    assert tiny_ladder.name == f"{WORLD_VERSION}-{world.fingerprint}-{tiny_world_setting.recipe.key()}"
    assert tiny_world_setting.missing() == []
    assert tiny_world_setting.path("world_large_dpo") == tiny_ladder / "world_large_dpo"


def test_ladder_models_load_and_share_one_tokenizer(tiny_ladder):
    reference = AutoTokenizer.from_pretrained(tiny_ladder / "tokenizer").get_vocab()
    sizes = {}
    for name in LADDER_MODELS:
        assert AutoTokenizer.from_pretrained(tiny_ladder / name).get_vocab() == reference
        model = AutoModelForCausalLM.from_pretrained(tiny_ladder / name)
        assert model.get_output_embeddings().weight.shape[0] == len(reference)
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert sizes["world_small"] == sizes["world_small_dpo"] < sizes["world_large_dpo"]


def test_dpo_changes_the_small_model(tiny_ladder):
    small = AutoModelForCausalLM.from_pretrained(tiny_ladder / "world_small").state_dict()
    aligned = AutoModelForCausalLM.from_pretrained(tiny_ladder / "world_small_dpo").state_dict()
    assert any(not torch.equal(small[k], aligned[k]) for k in small)


def test_manifest_describes_the_build(tiny_ladder, tiny_world_setting, world):
    entry = manifest(tiny_ladder)
    assert (entry["fingerprint"], entry["world_config"]) == (world.fingerprint, dataclasses.asdict(world.config))
    assert entry["recipe"] == json.loads(json.dumps(dataclasses.asdict(tiny_world_setting.recipe)))
    assert set(entry["models"]) == set(LADDER_MODELS)
    for model in entry["models"].values():
        assert 0.0 <= model["gold_accuracy"] <= 1.0 and -1.75 <= model["gold_mean_reward"] <= 1.0
    stages = [s["stage"] for s in entry["stages"]]
    assert stages[:3] == ["world_small/pretrain", "world_small/sft", "world_small/gold"]
    assert "world_small_dpo/dpo" in stages and "world_large_dpo/dpo" in stages
    assert all(s["seconds"] >= 0 for s in entry["stages"]) and entry["build_seconds"] > 0


def test_dpo_rungs_are_runs_of_the_training_entry_point(tiny_ladder, tiny_world_setting):
    for name in ("world_small_dpo", "world_large_dpo"):
        run = tiny_ladder / f"{name}.train"
        config = (run / "config.yaml").read_text()
        assert "_target_: selalign.objectives.DPO" in config and "max_steps: 2" in config  # the recipe's overrides
        assert json.loads((run / "metrics.json").read_text())["train/loss"] > 0
        assert manifest(tiny_ladder)["models"][name]["dpo_run"]["overrides"][:len(tiny_world_setting.recipe.dpo)] == list(tiny_world_setting.recipe.dpo)


def test_build_is_deterministic_given_the_world(tiny_ladder, tiny_world_setting, world, tmp_path):
    again = build_ladder(world, tiny_world_setting.world_settings, tiny_world_setting.recipe, tmp_path)
    assert without_timings(again)["models"].keys() == without_timings(manifest(tiny_ladder))["models"].keys()
    for name in LADDER_MODELS:
        first = AutoModelForCausalLM.from_pretrained(tiny_ladder / name).state_dict()
        second = AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first), name
        assert again["models"][name]["gold_accuracy"] == manifest(tiny_ladder)["models"][name]["gold_accuracy"]


def test_a_built_ladder_is_reused(tiny_ladder, tiny_world_setting):
    written = (tiny_ladder / MANIFEST_FILE).stat().st_mtime_ns
    assert tiny_world_setting.prepare() == []
    assert (tiny_ladder / MANIFEST_FILE).stat().st_mtime_ns == written


def test_another_world_or_recipe_gets_another_folder(world, tiny_world_setting, tmp_path):
    recipe = tiny_world_setting.recipe
    folders = {
        ladder_dir(world, recipe, tmp_path),
        ladder_dir(world, dataclasses.replace(recipe, sft_steps=4), tmp_path),
        ladder_dir(world, dataclasses.replace(recipe, dpo=(*recipe.dpo, "method.beta=0.2")), tmp_path),
        ladder_dir(World(WorldConfig(seed=8)), recipe, tmp_path),
        ladder_dir(World(dataclasses.replace(world.config, n_entities=60)), recipe, tmp_path),
    }
    assert len(folders) == 5
    assert all(folder.parent == tmp_path / "world" and folder.name.startswith(f"{WORLD_VERSION}-") for folder in folders)


def test_concurrent_callers_build_once(tiny_world_setting, tmp_path, monkeypatch):
    builds = []

    def fake_build(world, world_settings, recipe, out_dir, lock=None, progress=False):
        builds.append(out_dir)
        threading.Event().wait(0.2)  # long enough for the other caller to reach the lock
        out_dir.mkdir()
        for name in ["tokenizer", *LADDER_MODELS]:
            (out_dir / name).mkdir()
        (out_dir / MANIFEST_FILE).write_text("{}")

    monkeypatch.setattr(setting_module, "build_ladder", fake_build)
    setting = WorldSetting(str(tmp_path), world={"seed": 7}, ladder=dataclasses.asdict(tiny_world_setting.recipe) | {"dpo": list(tiny_world_setting.recipe.dpo)})
    callers = [threading.Thread(target=lambda: setting.prepare(["world_small"])) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(builds) == 1
    folder = setting.ladder_dir()
    assert sorted(p.name for p in (tmp_path / "world").iterdir()) == [folder.name, folder.name + ".lock"]


def test_unknown_artifact_or_recipe_key_fails_clearly(tiny_world_setting, tmp_path):
    with pytest.raises(ValueError, match="has no artifact 'world_huge'"):
        tiny_world_setting.path("world_huge")
    with pytest.raises(ValueError, match=r"setting.ladder has unknown keys \['dpo_steps'\]"):
        WorldSetting(str(tmp_path), ladder=dataclasses.asdict(tiny_world_setting.recipe) | {"dpo_steps": 3})


def test_prepare_cli_lists_and_builds(tiny_ladder, ladder_cache, capsys):
    prepare_cli(["world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", "--list"])
    lines = capsys.readouterr().out.splitlines()
    for name in LADDER_MODELS:
        assert f"built    {tiny_ladder / name}" in next(line for line in lines if line.startswith(name + " "))
