"""The ladder of world models: built once, on first use, deterministically, into a versioned cache folder."""

import dataclasses
import json
import threading

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.settings.world import LADDER_MODELS, LADDER_SCALES, WORLD_VERSION, World, WorldConfig, ensure_ladder, ladder_dir
from selalign.settings.world import ladder as ladder_module
from selalign.settings.world.__main__ import main as world_cli
from selalign.settings.world.ladder import MANIFEST_FILE, build_ladder, is_built


def manifest(folder):
    return json.loads((folder / MANIFEST_FILE).read_text())


def without_timings(entry):
    """A manifest without its wall-clock fields."""
    entry = dict(entry, stages=[{k: v for k, v in s.items() if k != "seconds"} for s in entry["stages"]])
    entry.pop("build_seconds")
    return entry


def test_resolver_builds_the_ladder_on_first_use(tiny_ladder, ladder_cache, world):
    assert tiny_ladder == ladder_dir(world, "tiny", ladder_cache)
    assert tiny_ladder.name == f"{WORLD_VERSION}-{world.fingerprint}-tiny"
    config = OmegaConf.create({"path": f"${{world_model:world_large_dpo,7,tiny,{ladder_cache}}}"})
    assert config.path == str(tiny_ladder / "world_large_dpo")


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


def test_manifest_describes_the_build(tiny_ladder, world):
    entry = manifest(tiny_ladder)
    assert (entry["world_version"], entry["fingerprint"], entry["scale"]) == (WORLD_VERSION, world.fingerprint, "tiny")
    assert entry["recipe"] == json.loads(json.dumps(dataclasses.asdict(LADDER_SCALES["tiny"])))
    assert set(entry["models"]) == set(LADDER_MODELS)
    for model in entry["models"].values():
        assert 0.0 <= model["gold_accuracy"] <= 1.0 and -1.75 <= model["gold_mean_reward"] <= 1.0
    stages = [s["stage"] for s in entry["stages"]]
    assert stages[:3] == ["world_small/pretrain", "world_small/sft", "world_small/gold"]
    assert "world_small_dpo/dpo" in stages and "world_large_dpo/dpo" in stages
    assert all(s["seconds"] >= 0 for s in entry["stages"]) and entry["build_seconds"] > 0


def test_build_is_deterministic_given_the_world(tiny_ladder, world, tmp_path):
    again = build_ladder(world, LADDER_SCALES["tiny"], "tiny", tmp_path)
    assert without_timings(again) == without_timings(manifest(tiny_ladder))
    for name in LADDER_MODELS:
        first = AutoModelForCausalLM.from_pretrained(tiny_ladder / name).state_dict()
        second = AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict()
        assert all(torch.equal(first[k], second[k]) for k in first), name


def test_a_built_ladder_is_reused(tiny_ladder, ladder_cache, world):
    written = (tiny_ladder / MANIFEST_FILE).stat().st_mtime_ns
    assert ensure_ladder(world, "tiny", ladder_cache) == tiny_ladder
    assert (tiny_ladder / MANIFEST_FILE).stat().st_mtime_ns == written


def test_another_world_or_scale_gets_another_folder(world, tmp_path):
    folders = {
        ladder_dir(world, "tiny", tmp_path),
        ladder_dir(world, "full", tmp_path),
        ladder_dir(World(WorldConfig(seed=8)), "tiny", tmp_path),
        ladder_dir(World(dataclasses.replace(world.config, n_entities=60)), "tiny", tmp_path),
    }
    assert len(folders) == 4
    assert all(folder.parent == tmp_path / "world" and folder.name.startswith(f"{WORLD_VERSION}-") for folder in folders)


def test_a_ladder_of_another_recipe_is_not_taken_as_built(tiny_ladder):
    assert is_built(tiny_ladder, LADDER_SCALES["tiny"])
    assert not is_built(tiny_ladder, dataclasses.replace(LADDER_SCALES["tiny"], dpo_steps=3))


def test_concurrent_callers_build_once_and_stale_builds_are_cleared(world, tmp_path, monkeypatch):
    builds = []

    def fake_build(world, recipe, scale, out_dir, progress=False):
        builds.append(out_dir)
        threading.Event().wait(0.2)  # long enough for the other caller to reach the lock
        for name in ["tokenizer", *LADDER_MODELS]:
            (out_dir / name).mkdir()
            (out_dir / name / "config.json").write_text("{}")
        (out_dir / MANIFEST_FILE).write_text(json.dumps({"recipe": dataclasses.asdict(recipe)}))

    monkeypatch.setattr(ladder_module, "build_ladder", fake_build)
    killed_build = ladder_dir(world, "tiny", tmp_path).with_name(f"{ladder_dir(world, 'tiny', tmp_path).name}.building-killed")
    killed_build.mkdir(parents=True)
    results = []
    callers = [threading.Thread(target=lambda: results.append(ensure_ladder(world, "tiny", tmp_path))) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(builds) == 1
    assert results == [ladder_dir(world, "tiny", tmp_path)] * 2
    assert sorted(p.name for p in (tmp_path / "world").iterdir()) == [results[0].name, results[0].name + ".lock"]


def test_unknown_model_or_scale_fails_clearly(ladder_cache):
    with pytest.raises(Exception, match="names no ladder model"):
        OmegaConf.create({"path": f"${{world_model:world_huge,7,tiny,{ladder_cache}}}"}).path
    with pytest.raises(ValueError, match="unknown world ladder scale 'medium'"):
        ladder_dir(World(), "medium", ladder_cache)


def test_cli_prints_the_manifest_accuracies(tiny_ladder, ladder_cache, capsys):
    world_cli(["build", "--scale", "tiny", "--seed", "7", "--cache-dir", str(ladder_cache)])
    printed = capsys.readouterr().out
    assert all(name in printed for name in LADDER_MODELS) and "gold accuracy" in printed
