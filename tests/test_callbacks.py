"""The training throughput every run reports, and learning curves."""

import functools

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.callbacks import TrainTokensPerSecond
from selalign.data import FilesDataModule
from selalign.module import PreferenceModule
from selalign.objectives import DPO


def test_tokens_per_second_counts_the_real_tokens_of_every_trained_row(tiny_lm, tiny_ref, pairs_file):
    datamodule = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=4)
    datamodule.setup("fit")
    pairs = {pair["index"]: pair for pair in datamodule.splits["train"]}
    first_batches = [batch["pair_index"].tolist() for _, batch in zip(range(3), datamodule.train_dataloader())]
    expected = sum(2 * len(pairs[i]["prompt_ids"]) + len(pairs[i]["chosen_ids"]) + len(pairs[i]["rejected_ids"]) for batch in first_batches for i in batch)
    module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref), DPO(beta=0.1), functools.partial(torch.optim.AdamW, lr=1e-3))
    throughput = TrainTokensPerSecond()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0, callbacks=[throughput])
    trainer.fit(module, datamodule=datamodule)
    assert throughput.tokens == expected
    assert float(trainer.callback_metrics["time/train_tokens_per_second"]) > 0


def test_the_learning_curve_writes_a_point_before_the_first_step_every_n_steps_and_after_the_last(tiny_ladder, ladder_cache, tmp_path):
    import json

    from selalign.train import train
    from support.configs import compose_train

    overrides = [
        "setting=world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", f"paths.root_dir={tmp_path}", "logger=csv",
        "trainer.max_steps=5", "data.train_pairs=40", "data.validation_pairs=8", "data.batch_size=4",
        "benchmark.n_prompts=4", "benchmark.max_new_tokens=8", "benchmark.every_n_steps=2", "benchmark.curve_prompts=3",
        "callbacks.progress_bar=null", "callbacks.selection_pictures=null",
    ]
    train(compose_train(*overrides, output_dir=tmp_path / "run"))
    points = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 2, 4, 5]
    assert all(later["seconds"] > earlier["seconds"] > 0 for earlier, later in zip(points, points[1:]))
    for point in points:
        assert 0.0 <= point["probe/accuracy"] <= 1.0 and 0.0 <= point["gold/accuracy"] <= 1.0 and 0.0 <= point["selection/auroc"] <= 1.0
        assert point["gold/accuracy"] + point["gold/wrong"] + point["gold/no_value"] == pytest.approx(1.0)
    assert points[0]["gold/kl_to_start"] == pytest.approx(0.0, abs=1e-5)  # before the first step the policy is its start
    assert all(3 * point["probe/accuracy"] in (0, 1, 2, 3) for point in points)  # the probe's balanced subset: curve_prompts questions
    logged = (tmp_path / "run" / "csv").rglob("metrics.csv")
    assert "curve/probe/accuracy" in next(logged).read_text().splitlines()[0]


def test_without_every_n_steps_there_is_no_curve(tiny_ladder, ladder_cache, tmp_path):
    from selalign.train import train
    from support.configs import compose_train

    overrides = [
        "setting=world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", "logger=none", "trainer.max_steps=1",
        "data.train_pairs=8", "data.validation_pairs=4", "data.batch_size=4", "benchmark=none",
    ]
    train(compose_train(*overrides, output_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "curve.jsonl").exists()
