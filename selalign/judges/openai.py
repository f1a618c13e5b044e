"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, TGI, ...), on the
official ``openai`` client.

Transport, key handling and retries are ``selalign.generators.endpoint.ChatEndpoint``'s: the API key is read from the
environment variable *named* by ``api_key_env`` when a session opens (each ``judge_all`` or ``judge`` call), is never
stored on the judge, never part of its identity, and is scrubbed from error messages; ``api_key_env=None`` sends no
Authorization header (a local server without a key). Timeouts, connection errors, 408/409/429 and 5xx answers are
retried by the client ``max_retries`` times with exponential backoff (or after the server's ``Retry-After``), then
``JudgeUnavailableError`` is raised; other 4xx answers raise ``JudgeRequestError`` at once. ``judge_all`` awaits up to
``max_concurrency`` requests at once on one ``AsyncOpenAI`` client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from selalign.generators.concurrency import run_sync
from selalign.generators.endpoint import ChatConnection, ChatEndpoint, EndpointRequestError, EndpointUnavailableError
from selalign.judges.base import Judge, JudgeRequestError, JudgeUnavailableError, Messages


@contextlib.contextmanager
def _as_judge_errors() -> Iterator[None]:
    try:
        yield
    except EndpointUnavailableError as error:
        raise JudgeUnavailableError(str(error)) from None
    except EndpointRequestError as error:
        raise JudgeRequestError(str(error)) from None


class OpenAIJudge(Judge):
    """Chat-completions judge; ``base_url`` includes the API version prefix, e.g. ``https://api.openai.com/v1``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        max_parse_attempts: int = 3,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.endpoint = ChatEndpoint(base_url, api_key_env, timeout_s, max_retries)
        self.model = model
        self.max_concurrency = max_concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_parse_attempts = max_parse_attempts
        self._connection: ChatConnection | None = None

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.endpoint.base_url!r}, api_key_env={self.endpoint.api_key_env!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "model": self.model,
            "base_url": self.endpoint.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def preflight(self) -> None:
        """Raise now if the key is missing or refused, the endpoint unreachable, or ``model`` not among those it lists."""
        with _as_judge_errors():
            self.endpoint.preflight(self.model)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """One client (connection pool) for the requests of one ``judge_all`` or ``judge`` call."""
        with _as_judge_errors():
            async with self.endpoint.connect() as connection:
                self._connection = connection
                try:
                    yield
                finally:
                    self._connection = None

    async def acomplete(self, messages: Messages) -> str:
        if self._connection is None:
            raise RuntimeError("OpenAIJudge.acomplete runs inside `async with judge.session()` (judge_all opens it)")
        with _as_judge_errors():
            reply = await self._connection.chat(self.model, messages, temperature=self.temperature, max_tokens=self.max_tokens)
        return reply or ""  # no content (e.g. a refusal): a reply without a verdict

    def complete(self, messages: Messages) -> str:
        async def in_session() -> str:
            async with self.session():
                return await self.acomplete(messages)

        return run_sync(in_session())
