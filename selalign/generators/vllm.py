"""``generator=vllm``: the in-process ``vllm.LLM`` engine on the policy's weights (a CUDA GPU and the ``vllm`` package).

The engine loads ``policy.name_or_path`` (the run's ``policy/`` folder, or a hub id) once per session and decodes all
prompts of a call together (continuous batching). Prompts are the token ids the ``hf`` generator would feed
(``render_prompt``, no added special tokens) and an answer ends at the same stop tokens, so greedy answers match
``hf``'s up to numerical differences between the two engines' kernels. Every request is seeded with
``Sampling.seed``. The engine's GPU memory is freed when the session ends (``release``).
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from selalign.data.formats import render_prompt
from selalign.generators.base import Conversation, Generator, Policy, Sampling

INSTALL_HINT = "pip install vllm, on a Linux machine with a CUDA GPU"


def require_vllm(generator: str) -> None:
    """Raise ImportError naming the missing ``vllm`` package (and what to do) when it is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(f"generator={generator} needs the vllm package, which is not installed ({INSTALL_HINT}); generator=hf works without it")


class VLLMGenerator(Generator):
    """vLLM in this process: ``dtype``, ``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size`` as
    ``vllm.LLM`` takes them; ``progress`` shows vLLM's progress bar."""

    needs_tokenizer = True

    def __init__(self, dtype: str = "auto", gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, tensor_parallel_size: int = 1, progress: bool = True) -> None:
        require_vllm("vllm")
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.progress = progress
        self._engine: Any = None
        self._loaded: str | None = None

    def __repr__(self) -> str:
        return f"VLLMGenerator(dtype={self.dtype!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {"engine": "vllm", "dtype": self.dtype}

    def _engine_for(self, policy: Policy) -> Any:
        if policy.name_or_path is None:
            raise ValueError("generator=vllm loads the policy's weights: give the Policy its name_or_path (folder or hub id)")
        if self._engine is not None and self._loaded == policy.name_or_path:
            return self._engine
        self.release()
        import vllm

        self._engine = vllm.LLM(
            model=policy.name_or_path, tokenizer=policy.name_or_path, revision=policy.revision, trust_remote_code=policy.trust_remote_code,
            dtype=self.dtype, gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
        )
        self._loaded = policy.name_or_path
        return self._engine

    def generate_uncached(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, on_answer: Callable[[int, str], None]) -> None:
        import vllm
        from transformers import GenerationConfig

        from selalign.generators.hf import stop_token_ids

        tokenizer = policy.tokenizer
        if tokenizer is None:
            raise ValueError("generator=vllm renders prompts with the policy's tokenizer: give the Policy its tokenizer")
        engine = self._engine_for(policy)
        try:
            generation_config = GenerationConfig.from_pretrained(policy.name_or_path, revision=policy.revision)
        except OSError:  # a folder without generation_config.json: the tokenizer's eos alone ends answers
            generation_config = None
        prompts = [
            {"prompt_token_ids": tokenizer(render_prompt(tokenizer, [dict(message) for message in conversation]), add_special_tokens=False)["input_ids"]}
            for conversation in conversations
        ]
        params = vllm.SamplingParams(
            temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
            stop_token_ids=stop_token_ids(generation_config, tokenizer), skip_special_tokens=True,
        )
        for index, output in enumerate(engine.generate(prompts, params, use_tqdm=self.progress)):
            on_answer(index, output.outputs[0].text.strip())

    def release(self) -> None:
        if self._engine is None:
            return
        self._engine, self._loaded = None, None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
