import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.configs import compose_train, tiny_overrides
from support.tiny import toy_pairs, write_jsonl
from selalign.data import FilesDataModule
from selalign.refcache import cache_key, cached_logps
from selalign.train import train


def cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path, *extra):
    return [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none", "trainer.max_steps=3",
            f"paths.cache_dir={tmp_path / 'cache'}", *extra]


def test_cached_reference_gives_the_same_losses_as_the_live_one(tiny_lm, tiny_ref, pairs_file, tmp_path):
    live = train(compose_train(*cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), output_dir=tmp_path / "live"))
    cached = train(compose_train(*cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path, "ref_cache=true"), output_dir=tmp_path / "cached"))
    assert len(list((tmp_path / "cache" / "logps").glob("*.pt"))) == 1
    for name in ["train/loss", "val/loss", "val/rewards/margins", "val/selection/kept_chosen", "val/selection/score_kept"]:
        assert cached[name] == pytest.approx(live[name], abs=1e-5), name


def test_cache_is_reused_and_rebuilt_when_data_changes(tiny_lm, tiny_ref, pairs_file, tmp_path, caplog):
    cfg = compose_train(*cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), output_dir=tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    loads = []

    def load_reference():
        loads.append(1)
        return AutoModelForCausalLM.from_pretrained(tiny_ref)

    def datamodule(path):
        dm = FilesDataModule(path=str(path), validation_fraction=0.2, tokenizer=tokenizer)
        dm.setup()
        return dm

    first = datamodule(pairs_file)
    chosen, rejected, path = cached_logps(cfg.ref_model, load_reference, first, str(tmp_path / "cache"), 8)
    again = cached_logps(cfg.ref_model, load_reference, datamodule(pairs_file), str(tmp_path / "cache"), 8)
    assert len(loads) == 1 and again[2] == path
    assert all(torch.equal(a, b) for a, b in zip(chosen, again[0]))
    record = first.records()[0]
    assert len(chosen[record["index"]]) == len(record["chosen_ids"])

    changed = write_jsonl(tmp_path / "changed.jsonl", toy_pairs(41))
    cached_logps(cfg.ref_model, load_reference, datamodule(changed), str(tmp_path / "cache"), 8)
    assert len(loads) == 2
    assert cache_key(cfg.ref_model, datamodule(changed)) != cache_key(cfg.ref_model, first)

    path.write_bytes(b"not a torch file")  # a corrupt cache is rebuilt with a message
    with caplog.at_level(logging.WARNING, logger="selalign.refcache"):
        rebuilt = cached_logps(cfg.ref_model, load_reference, datamodule(pairs_file), str(tmp_path / "cache"), 8)
    assert len(loads) == 3 and "unreadable" in caplog.text
    assert all(torch.allclose(a, b) for a, b in zip(chosen, rebuilt[0]))
