"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, ...), stdlib HTTP only.

The API key is read from the environment variable *named* by ``api_key_env`` each time a request is made; it is
never stored on the judge, never part of its identity, and scrubbed from error messages. ``api_key_env=None`` sends
no Authorization header (a local server without a key).

Transport policy: 408/429/5xx answers, timeouts, connection errors and malformed bodies are retried with
exponential backoff (``backoff_s * 2**retry``, or the server's ``Retry-After`` when it gives one, capped at
``max_backoff_s``); after ``max_retries`` retries ``JudgeUnavailableError`` is raised. Other 4xx answers raise
``JudgeRequestError`` at once.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from selalign.judges.base import Judge, JudgeRequestError, JudgeUnavailableError, Messages


def _is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


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
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_parse_attempts = max_parse_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeRequestError(
                f"environment variable {self.api_key_env} is not set; export it with the API key for {self.base_url} "
                "(or set the judge's api_key_env to null for a server without a key)"
            )
        return key

    def _scrub(self, text: str, key: str | None) -> str:
        return text.replace(key, "***") if key else text

    def complete(self, messages: Messages) -> str:
        key = self._api_key()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        body = json.dumps(payload).encode("utf-8")
        failure, wait_s = "", 0.0
        for retry in range(self.max_retries + 1):
            time.sleep(wait_s)
            wait_s = min(self.max_backoff_s, self.backoff_s * 2**retry)
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return _reply_text(json.loads(response.read()))
            except urllib.error.HTTPError as error:
                detail = self._scrub(error.read().decode("utf-8", "replace")[:500], key)
                if not _is_retryable_status(error.code):
                    raise JudgeRequestError(f"{self.url} refused the request with HTTP {error.code}: {detail}") from None
                failure = f"HTTP {error.code}: {detail}"
                retry_after = error.headers.get("Retry-After", "")
                if retry_after.replace(".", "", 1).isdigit():
                    wait_s = min(self.max_backoff_s, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
                failure = self._scrub(f"{type(error).__name__}: {getattr(error, 'reason', error)}", key)
            except (ValueError, KeyError, IndexError, TypeError) as error:
                failure = f"malformed response body ({type(error).__name__}: {error})"
        raise JudgeUnavailableError(f"{self.url} failed {self.max_retries + 1} times in a row; last failure: {failure}")


def _reply_text(body: dict[str, Any]) -> str:
    """The first choice's message content; an empty string when the server sent none (e.g. a refusal)."""
    return body["choices"][0]["message"]["content"] or ""
