"""``generator=openai``: answers from any OpenAI-compatible chat endpoint (``vllm serve <policy dir>``, SGLang, TGI, a
hosted API), ``max_concurrency`` requests in flight at once.

Each conversation is one ``/chat/completions`` request: its messages, ``max_tokens``, ``temperature`` and ``seed``
from the ``Sampling``, and ``request_params`` (any other request key the server understands: ``top_p``, ``top_k``,
``repetition_penalty``, ...). The server renders the messages with its chat template. Transport, key and retries are
``selalign.generators.endpoint``'s. An answer arrives in the cache as soon as its request completes; a request that
still fails after the retries stops the call (requests in flight finish and are saved) with ``GenerationError``. A
reply without content (a refusal, a tool call) is an error too, never an empty answer.

The generator's identity (part of every cache key) is the endpoint's ``base_url``, the served ``model`` name and
``request_params``; the policy's identity says which weights the endpoint is meant to serve.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selalign.generators.base import Conversation, GenerationError, Generator, Policy, Sampling
from selalign.generators.concurrency import run_bounded, run_sync
from selalign.generators.endpoint import ChatConnection, ChatEndpoint, EndpointError


class OpenAIGenerator(Generator):
    """Generation through the endpoint at ``base_url`` (e.g. ``http://localhost:8000/v1``) serving ``model``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        request_params: Mapping[str, Any] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        reserved = {"model", "messages", "max_tokens", "temperature", "seed"} & set(request_params or {})
        if reserved:
            raise ValueError(f"request_params cannot set {sorted(reserved)}: they come from the policy and the sampling settings")
        self.endpoint = ChatEndpoint(base_url, api_key_env, timeout_s, max_retries)
        self.model = model
        self.max_concurrency = max_concurrency
        self.request_params = dict(request_params or {})

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, base_url={self.endpoint.base_url!r}, api_key_env={self.endpoint.api_key_env!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {"engine": "openai", "base_url": self.endpoint.base_url, "model": self.model, "request_params": self.request_params}

    async def _answer(self, connection: ChatConnection, conversation: Conversation, sampling: Sampling) -> str:
        messages = [{"role": message["role"], "content": message["content"]} for message in conversation]
        params: dict[str, Any] = {"max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature, "seed": sampling.seed}
        if self.request_params:
            params["extra_body"] = self.request_params
        reply = await connection.chat(self.model, messages, **params)
        if reply is None:
            raise GenerationError(f"{self.endpoint.url} sent a reply without text content (a refusal or a tool call) to: {messages[-1]['content'][:200]!r}")
        return reply.strip()

    def generate_uncached(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, on_answer: Callable[[int, str], None]) -> None:
        async def answer_all() -> None:
            async with self.endpoint.connect() as connection:
                jobs = [functools.partial(self._answer, connection, conversation, sampling) for conversation in conversations]
                await run_bounded(jobs, self.max_concurrency, on_answer)

        try:
            run_sync(answer_all())
        except EndpointError as error:
            raise GenerationError(str(error)) from None
