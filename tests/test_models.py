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
