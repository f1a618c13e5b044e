"""An OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, TGI, ...) on the official ``openai`` client.

The ``openai`` generator and the ``openai`` judge both talk to endpoints through ``ChatEndpoint``:

- the API key is read from the environment variable *named* by ``api_key_env`` when a connection opens (every
  ``generate`` or judging call), is never stored on the endpoint, never part of an identity, and is scrubbed from
  error messages; ``api_key_env=None`` sends no Authorization header (a local server without a key);
- the ``openai`` client retries timeouts, connection errors, 408, 409, 429 and 5xx answers ``max_retries`` times
  with exponential backoff (0.5 s doubling up to 8 s, with jitter), or after the server's ``Retry-After`` when it
  gives one (up to 2 minutes); then ``EndpointUnavailableError`` is raised. Other 4xx answers are not retried:
  ``EndpointRequestError``; a 200 answer without choices is reported at once as ``EndpointUnavailableError``;
- ``preflight(model)`` checks, before any expensive work, that the key is there, the endpoint answers and accepts it,
  and (when it lists its models) that it serves ``model``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import openai

from selalign.generators.concurrency import run_sync

try:
    from openai import Omit
except ImportError:  # older openai releases keep it in openai._types only
    from openai._types import Omit

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would drown the run's log
logging.getLogger("httpx2").setLevel(logging.WARNING)

NO_KEY = "no-key"  # the client insists on some key; requests without api_key_env omit the Authorization header


class EndpointError(RuntimeError):
    """A chat endpoint gave no reply."""


class EndpointUnavailableError(EndpointError):
    """The endpoint kept failing (timeouts, connection errors, 408/409/429/5xx) after all retries."""


class EndpointRequestError(EndpointError):
    """The endpoint refused the request (missing or rejected key, unknown model, other 4xx): retrying will not help."""


def _is_retried_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


class ChatEndpoint:
    """Connection settings of one endpoint; ``base_url`` includes the API prefix, e.g. ``https://api.openai.com/v1``."""

    def __init__(self, base_url: str, api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 120.0, max_retries: int = 6) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"ChatEndpoint(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def api_key(self) -> str | None:
        """The key from the environment (None without ``api_key_env``); a clear error when the variable is unset."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointRequestError(
                f"environment variable {self.api_key_env} is not set; export it with the API key for {self.base_url} "
                "(or set api_key_env to null for a server without a key)"
            )
        return key

    @contextlib.asynccontextmanager
    async def connect(self, max_retries: int | None = None) -> AsyncIterator[ChatConnection]:
        """An open connection pool (an ``AsyncOpenAI`` client) for the requests of one call; closed on exit."""
        key = self.api_key()
        retries = self.max_retries if max_retries is None else max_retries
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key or NO_KEY, timeout=self.timeout_s, max_retries=retries)
        try:
            yield ChatConnection(self, client, key, retries)
        finally:
            await client.close()

    def preflight(self, model: str) -> None:
        """Raise ``EndpointRequestError`` / ``EndpointUnavailableError`` now if requests to ``model`` cannot succeed.

        Lists the endpoint's models (``GET /models``, with the key): an unreachable endpoint, a missing or refused key
        and a model the endpoint does not list all fail here. An endpoint without a model list (HTTP 404) passes.
        """

        async def probe() -> list[str] | None:
            async with self.connect(max_retries=min(self.max_retries, 2)) as connection:
                return await connection.list_models()

        served = run_sync(probe())
        if served is None:
            log.warning("%s does not list its models; %r is not checked before the first request", self.base_url, model)
        elif model not in served:
            shown = ", ".join(served[:20]) + (f" and {len(served) - 20} more" if len(served) > 20 else "")
            raise EndpointRequestError(f"{self.base_url} does not serve the model {model!r}; it serves: {shown or 'nothing'}")


class ChatConnection:
    """Requests to one endpoint through one open client; errors become ``EndpointError``s without the key."""

    def __init__(self, endpoint: ChatEndpoint, client: openai.AsyncOpenAI, key: str | None, max_retries: int) -> None:
        self.endpoint = endpoint
        self._client = client
        self._key = key
        self._attempts = f"{max_retries + 1} time{'s' if max_retries else ''}"
        self._headers: dict[str, Any] = {} if key else {"Authorization": Omit()}

    def __repr__(self) -> str:
        return f"ChatConnection({self.endpoint!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _error(self, error: openai.APIError, where: str) -> EndpointError:
        if isinstance(error, openai.APIStatusError):
            body = error.body if isinstance(error.body, dict) else {}
            detail = self._scrub(str(body.get("message") or error.message)[:500])
            if _is_retried_status(error.status_code):
                return EndpointUnavailableError(f"{where} failed {self._attempts} in a row; last failure: HTTP {error.status_code}: {detail}")
            return EndpointRequestError(f"{where} refused the request with HTTP {error.status_code}: {detail}")
        if isinstance(error, openai.APIConnectionError):
            return EndpointUnavailableError(f"{where} failed {self._attempts} in a row; last failure: {type(error).__name__}: {self._scrub(str(error))}")
        return EndpointUnavailableError(f"{where}: malformed response ({type(error).__name__}: {self._scrub(str(error))[:500]})")

    async def chat(self, model: str, messages: list[dict[str, str]], **params: Any) -> str | None:
        """The first choice's message content (None when the server sent none, e.g. a refusal).

        ``params`` are request keys: ``temperature``, ``max_tokens``, ``seed``, or ``extra_body`` for any other.
        """
        try:
            completion = await self._client.chat.completions.create(model=model, messages=messages, extra_headers=self._headers, **params)
        except openai.APIError as error:
            raise self._error(error, self.endpoint.url) from None
        try:
            return completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as error:
            raise EndpointUnavailableError(f"{self.endpoint.url}: malformed response body ({type(error).__name__}: {error})") from None

    async def list_models(self) -> list[str] | None:
        """The ids of the models the endpoint serves, or None when it has no model list (HTTP 404)."""
        where = self.endpoint.base_url.rstrip("/") + "/models"
        try:
            page = await self._client.models.list(extra_headers=self._headers)
        except openai.NotFoundError:
            return None
        except openai.APIError as error:
            raise self._error(error, where) from None
        return [model.id for model in page.data]
