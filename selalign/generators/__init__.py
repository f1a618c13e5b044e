"""Generators: the policy's answers to chat conversations (the ``generator`` config group).

- ``HFGenerator`` (``selalign.generators.hf``): batched ``generate`` of transformers on the in-memory policy, offline.
- ``OpenAIGenerator`` (``selalign.generators.openai``): any OpenAI-compatible chat endpoint, requests in parallel.
- ``VLLMGenerator`` (``selalign.generators.vllm``): the in-process vLLM engine.
- ``VLLMServerGenerator`` (``selalign.generators.vllm_server``): ``vllm serve`` on the policy's weights, started and stopped around generation.

The contract (``Generator.generate(policy, conversations, sampling, cache)``) is in ``selalign.generators.base``;
``GenerationCache`` (``selalign.generators.cache``) keeps answers on disk, keyed on the model, the generator, the
conversation and the sampling settings. The generators import their engines from their own modules.
"""

from selalign.generators.base import Conversation, GenerationError, Generator, Policy, Sampling
from selalign.generators.cache import GenerationCache

__all__ = ["Conversation", "GenerationCache", "GenerationError", "Generator", "Policy", "Sampling"]
