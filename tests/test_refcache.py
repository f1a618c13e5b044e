import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.configs import compose_train, tiny_overrides
from support.tiny import toy_pairs, write_jsonl
from selalign.data import FilesDataModule
from selalign.refcache import cache_key, cached_logps, compute_share, length_sorted_batches
from selalign.train import train


def cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path, *extra):
    return [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none", "trainer.max_steps=3",
            f"paths.cache_dir={tmp_path / 'cache'}", *extra]


@pytest.mark.parametrize("reference", ["distinct", "policy_start"])
def test_cached_and_live_runs_follow_the_same_trajectory(reference, tiny_lm, tiny_ref, pairs_file, tmp_path):
    """Eight steps of Selective-DPO with the reference run live and read from the cache built at fit start end with the
    same policy (float32, to 1e-5), with a distinct reference and with the policy's own start as reference (whose
    live scores are exactly 0 at the first step: every token ties and is kept, live and cached)."""
    from safetensors.torch import load_file

    ref = tiny_ref if reference == "distinct" else tiny_lm
    common = [*cached_overrides(tiny_lm, ref, pairs_file, tmp_path), "trainer.max_steps=8", "optimizer.lr=1e-2", "data.eval_batch_size=3"]
    live = train(compose_train(*common, output_dir=tmp_path / "live"))
    cached = train(compose_train(*common, "ref_cache=true", output_dir=tmp_path / "cached"))
    assert len(list((tmp_path / "cache" / "logps").glob("*.pt"))) == 1  # the shares were joined and removed
    for name in ["train/loss", "val/loss", "val/rewards/margins", "val/selection/kept_chosen", "val/selection/score_kept"]:
        assert cached[name] == pytest.approx(live[name], abs=1e-5), name
    live_weights, cached_weights = (load_file(tmp_path / run / "policy" / "model.safetensors") for run in ("live", "cached"))
    initial = load_file(tiny_lm / "model.safetensors")
    assert any((live_weights[name] - initial[name]).abs().max() > 1e-3 for name in initial)  # the policy moved
    for name in live_weights:
        torch.testing.assert_close(cached_weights[name], live_weights[name], atol=1e-5, rtol=0, msg=name)


def test_shares_of_several_processes_cover_every_pair_once_in_equal_forward_counts(tiny_lm, tiny_ref, pairs_file):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=tokenizer)
    dm.setup()
    model = AutoModelForCausalLM.from_pretrained(tiny_ref).eval()
    batches = length_sorted_batches(dm, 3)
    lengths = [max(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in batch) for batch in batches]
    assert lengths == sorted(lengths, reverse=True) and len(batches) == 14  # 40 pairs in batches of 3, longest first
    whole = compute_share(model, dm, 3, torch.device("cpu"))
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    shares = []
    for rank in range(4):
        forwards.clear()
        shares.append(compute_share(model, dm, 3, torch.device("cpu"), rank=rank, world_size=4))
        assert len(forwards) == 4  # 14 batches over 4 processes: every process runs 4 forwards, two repeat one
    handle.remove()
    assert sorted(index for share in shares for index in share) == sorted(whole) == list(range(40))
    for share in shares:
        for index, (chosen, rejected) in share.items():
            torch.testing.assert_close(chosen, whole[index][0], atol=1e-6, rtol=0)
            torch.testing.assert_close(rejected, whole[index][1], atol=1e-6, rtol=0)


def test_the_precision_of_the_run_is_part_of_the_cache_key(tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = compose_train(*cached_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), output_dir=tmp_path)
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm))
    dm.setup()
    assert cache_key(cfg.ref_model, dm, "32-true") != cache_key(cfg.ref_model, dm, "bf16-mixed")
    chosen, _, _ = cached_logps(cfg.ref_model, lambda: AutoModelForCausalLM.from_pretrained(tiny_ref), dm, str(tmp_path / "cache"), 8, precision="bf16-mixed")
    full, _, _ = cached_logps(cfg.ref_model, lambda: AutoModelForCausalLM.from_pretrained(tiny_ref), dm, str(tmp_path / "cache"), 8)
    assert len(list((tmp_path / "cache" / "logps").glob("*.pt"))) == 2
    differences = torch.cat([(a - b).abs() for a, b in zip(chosen, full)])
    assert 0 < differences.max() < 0.1  # bf16 logits: close to float32, not equal


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
