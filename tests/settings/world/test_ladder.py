"""The ladder of world models: built once by the setting's prepare step, deterministically, into a folder of its world and recipe."""

import dataclasses
import json
import platform
import threading
from statistics import fmean

import lightning
import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.prepare import main as prepare_cli
from selalign.settings.world import LADDER_FOLDERS, LADDER_MODELS, WORLD_VERSION, World, WorldConfig, WorldScorer, WorldSetting, build_ladder, ladder_dir
from selalign.settings.world import setting as setting_module
from selalign.settings.world.ladder import MANIFEST_FILE, START_GATES
from selalign.settings.world.lm_training import Architecture, document_row, new_causal_lm, pack_rows, train_next_token


def manifest(folder):
    return json.loads((folder / MANIFEST_FILE).read_text())


def without_timings(entry):
    """A manifest without its wall-clock fields."""
    entry = dict(entry, stages=[{k: v for k, v in s.items() if k not in ("seconds", "cpu_seconds")} for s in entry["stages"]])
    entry.pop("build_seconds")
    return entry


def test_prepare_builds_every_artifact_into_the_folder_of_world_and_recipe(tiny_ladder, tiny_world_setting, ladder_cache, world):
    assert tiny_ladder == ladder_dir(world, tiny_world_setting.recipe, ladder_cache)
    assert tiny_ladder.name == f"{WORLD_VERSION}-{world.ladder_fingerprint}-{tiny_world_setting.recipe.key()}"
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
    assert (entry["fingerprint"], entry["world_config"]) == (world.ladder_fingerprint, dataclasses.asdict(world.config))
    assert entry["recipe"] == json.loads(json.dumps(dataclasses.asdict(tiny_world_setting.recipe)))
    assert entry["gold_settings"] == {"n_prompts": 8, "samples_per_prompt": 2, "split": "test", "max_new_tokens": 48, "temperature": 1.0, "seed": 0}
    assert list(entry["models"]) == list(LADDER_MODELS)
    for model in entry["models"].values():
        gold, probe = model["gold"], model["probe"]
        assert 0.0 <= probe["accuracy"] <= 1.0 and {"accuracy/colour", "accuracy/city", "accuracy/legs", "accuracy/arithmetic"} <= set(probe)
        assert gold["accuracy"] + gold["wrong"] + gold["no_value"] == pytest.approx(1.0)
        assert -1.75 <= gold["mean_reward"] <= 1.0 and gold["accuracy_se"] >= 0 and gold["mean_reward_se"] >= 0
        assert model["score_seconds"] > 0
    for name, model in entry["models"].items():  # a model's training seconds: its own stages before its scoring
        own = [s["seconds"] for s in entry["stages"] if s["stage"].startswith(f"{name}/") and not s["stage"].endswith("/score")]
        assert len(own) == (3 if name == "world_large_dpo" else 2 if name == "world_small" else 1)
        assert model["train_seconds"] == pytest.approx(sum(own), abs=0.05)
    stages = [s["stage"] for s in entry["stages"]]
    assert stages == ["world_small/pretrain", "world_small/sft", "world_small/score", "world_small_dpo/dpo", "world_small_dpo/score",
                      "world_large_dpo/pretrain", "world_large_dpo/sft", "world_large_dpo/dpo", "world_large_dpo/score"]
    assert all(s["seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in entry["stages"]) and entry["build_seconds"] > 0
    assert (entry["workers"], entry["threads_per_stage"]) == (1, 1)
    # what else the weights depend on: the CPU kernels torch used and the libraries
    assert entry["build_environment"] == {"torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__,
                                          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


def test_manifest_scores_are_the_probe_and_the_kept_answers_scored_again(tiny_ladder, tiny_world_setting, world):
    entry = manifest(tiny_ladder)["models"]["world_small_dpo"]
    model = AutoModelForCausalLM.from_pretrained(tiny_ladder / "world_small_dpo")
    tokenizer = AutoTokenizer.from_pretrained(tiny_ladder / "world_small_dpo")
    assert {name: round(value, 4) for name, value in tiny_world_setting.probe(model, tokenizer).items()} == entry["probe"]
    [answers_file] = (tiny_ladder / "generations" / "gold").glob("world_small_dpo-*.jsonl")
    rows = [json.loads(line) for line in answers_file.read_text().splitlines()]
    prompts = {p["prompt"]: p for p in world.eval_prompts(8)}
    assert len(rows) == 8 * 2 and {row["conversation"][0]["content"] for row in rows} == set(prompts)
    scores = WorldScorer(world).score([row["conversation"][0]["content"] for row in rows], [row["answer"] for row in rows])
    # every prompt has the same number of samples, so the mean over prompts of per-prompt means is the plain mean
    assert entry["gold"]["accuracy"] == round(fmean(scores.breakdown["accuracy"]), 4)
    assert entry["gold"]["mean_reward"] == round(fmean(scores.rewards), 4)
    assert entry["gold"]["no_value"] == round(fmean(scores.breakdown["no_value"]), 4)


def test_start_gates_are_read_off_world_small(tiny_ladder):
    entry = manifest(tiny_ladder)
    gates, small = entry["start_gates"], entry["models"]["world_small"]
    assert (gates["probe_accuracy"], gates["sampled_accuracy"]) == (small["probe"]["accuracy"], small["gold"]["accuracy"])
    assert (gates["probe_accuracy_min"], gates["sampled_accuracy_max"]) == (START_GATES["probe_accuracy_min"], START_GATES["sampled_accuracy_max"]) == (0.5, 0.2)
    assert gates["met"] == (gates["probe_accuracy"] >= 0.5 and gates["sampled_accuracy"] <= 0.2)


def test_dpo_rungs_are_runs_of_the_training_entry_point(tiny_ladder, tiny_world_setting):
    for name in ("world_small_dpo", "world_large_dpo"):
        run = tiny_ladder / f"{name}.train"
        config = (run / "config.yaml").read_text()
        assert "_target_: selalign.objectives.DPO" in config and "max_steps: 2" in config  # the recipe's overrides
        assert json.loads((run / "metrics.json").read_text())["train/loss"] > 0
        assert manifest(tiny_ladder)["models"][name]["dpo_run"]["overrides"][:len(tiny_world_setting.recipe.dpo)] == list(tiny_world_setting.recipe.dpo)


def same_weights(first_dir, second_dir):
    """Names of the ladder folders whose weights differ between two builds."""
    differing = []
    for name in LADDER_FOLDERS:
        first = AutoModelForCausalLM.from_pretrained(first_dir / name).state_dict()
        second = AutoModelForCausalLM.from_pretrained(second_dir / name).state_dict()
        if not all(torch.equal(first[k], second[k]) for k in first):
            differing.append(name)
    return differing


def without_run_details(entry):
    """A manifest's models without wall-clock fields, and its stages without their seconds."""
    models = {name: {k: v for k, v in model.items() if not k.endswith("_seconds")} for name, model in entry["models"].items()}
    return models, without_timings(entry)["stages"]


def test_build_is_deterministic_given_the_world(tiny_ladder, tiny_world_setting, world, tmp_path):
    again = build_ladder(world, tiny_world_setting.world_settings, tiny_world_setting.recipe, tmp_path, workers=1)
    assert same_weights(tiny_ladder, tmp_path) == []
    assert without_run_details(again) == without_run_details(manifest(tiny_ladder))


def full_size_recipe(tiny_world_setting):
    """The full recipe's architectures (where torch's kernels split their sums by thread) for a handful of steps."""
    return dataclasses.replace(
        tiny_world_setting.recipe, small=Architecture(128, 4, 4), large=Architecture(192, 4, 6), small_pretrain_steps=3, large_pretrain_steps=3,
        sft_steps=2, pretrain_batch_size=16, sft_batch_size=32, gold_prompts=16, gold_samples=2,
        dpo=("method=dpo", "trainer.max_steps=2", "data.batch_size=16", "data.train_pairs=32", "data.validation_pairs=16"),
    )


@pytest.mark.slow
def test_builds_under_other_thread_counts_and_in_worker_processes_are_identical(tiny_world_setting, world, world_tokenizer, tmp_path):
    recipe = full_size_recipe(tiny_world_setting)
    # Unpinned, torch's CPU kernels round differently on 3 threads than on 1 at these sizes: the comparison below can fail.
    rows = pack_rows([document_row(world_tokenizer, d) for d in world.pretraining_corpus(64)], 128)
    unpinned = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            model = new_causal_lm(recipe.small, world_tokenizer, 128, seed=0)
            train_next_token(model, rows, steps=3, batch_size=16, lr=2e-3, pad_token_id=world_tokenizer.pad_token_id, seed=0)
            unpinned.append(model.state_dict())
        assert any(not torch.equal(unpinned[0][k], unpinned[1][k]) for k in unpinned[0])

        torch.set_num_threads(3)
        three = build_ladder(world, tiny_world_setting.world_settings, recipe, tmp_path / "in_process_3_threads", workers=1)
        assert torch.get_num_threads() == 3  # the build gives the caller's thread count back
        torch.set_num_threads(1)
        one = build_ladder(world, tiny_world_setting.world_settings, recipe, tmp_path / "workers", workers=2)
    finally:
        torch.set_num_threads(threads)
    assert same_weights(tmp_path / "in_process_3_threads", tmp_path / "workers") == []
    assert without_run_details(three) == without_run_details(one)
    assert (three["workers"], one["workers"]) == (1, 2)


@pytest.mark.slow
def test_a_failing_chain_in_a_worker_process_stops_the_build_with_its_error(tiny_world_setting, world, tmp_path):
    recipe = dataclasses.replace(tiny_world_setting.recipe, large=Architecture(hidden_size=30, layers=1, heads=4))
    with pytest.raises(RuntimeError, match=r"(?s)building the ladder's large chain failed:.*hidden.size \(30\)"):
        build_ladder(world, tiny_world_setting.world_settings, recipe, tmp_path, workers=2)
    assert not (tmp_path / "world_large_sft").exists()


def test_workers_must_be_one_or_two(tiny_world_setting, world, tmp_path):
    with pytest.raises(ValueError, match="trains 1 or 2 chains of models at once"):
        build_ladder(world, tiny_world_setting.world_settings, tiny_world_setting.recipe, tmp_path, workers=4)


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
        ladder_dir(World(dataclasses.replace(world.config, n_entities=140)), recipe, tmp_path),
        ladder_dir(World(dataclasses.replace(world.config, format_rule_share=0.5)), recipe, tmp_path),
    }
    assert len(folders) == 6
    assert all(folder.parent == tmp_path / "world" and folder.name.startswith(f"{WORLD_VERSION}-") for folder in folders)
    # the ladder trains on clean pairs: a label-noise arm starts from the same models
    assert ladder_dir(World(dataclasses.replace(world.config, label_noise=0.2)), recipe, tmp_path) == ladder_dir(world, recipe, tmp_path)


def test_concurrent_callers_build_once(tiny_world_setting, tmp_path, monkeypatch):
    builds = []

    def fake_build(world, world_settings, recipe, out_dir, lock=None, progress=False, workers=2):
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


def test_unknown_artifact_recipe_or_world_key_fails_clearly(tiny_world_setting, tmp_path):
    with pytest.raises(ValueError, match="has no artifact 'world_huge'"):
        tiny_world_setting.path("world_huge")
    with pytest.raises(ValueError, match=r"setting.ladder has unknown keys \['dpo_steps'\]"):
        WorldSetting(str(tmp_path), ladder=dataclasses.asdict(tiny_world_setting.recipe) | {"dpo_steps": 3})
    with pytest.raises(ValueError, match=r"setting.world has unknown keys \['test_fraction'\]"):
        WorldSetting(str(tmp_path), world={"seed": 1, "test_fraction": 0.1})


def test_prepare_cli_lists_and_builds(tiny_ladder, ladder_cache, capsys):
    prepare_cli(["world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", "--list"])
    lines = capsys.readouterr().out.splitlines()
    for name in LADDER_MODELS:
        assert f"built    {tiny_ladder / name}" in next(line for line in lines if line.startswith(name + " "))
