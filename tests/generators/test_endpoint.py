"""ChatEndpoint's preflight against a real local HTTP server: key, reachability, credentials, served model."""

from __future__ import annotations

import time

import pytest

from selalign.generators.endpoint import ChatEndpoint, EndpointRequestError, EndpointUnavailableError
from support.stub_server import StubChatServer, StubReply

PLANTED_KEY = "sk-planted-preflight-0a1b2c3d4e5f"
KEY_ENV = "SELALIGN_TEST_PREFLIGHT_KEY"


def test_preflight_passes_when_the_model_is_served(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    with StubChatServer(lambda request: "unused", models=["judge-model", "other"]) as server:
        ChatEndpoint(server.base_url, KEY_ENV).preflight("judge-model")
    assert server.model_lists == [f"Bearer {PLANTED_KEY}"] and server.requests == []


def test_preflight_names_the_models_served_when_the_model_is_not_among_them():
    with StubChatServer(lambda request: "unused", models=["qwen-72b"]) as server:
        with pytest.raises(EndpointRequestError, match=r"does not serve the model 'gpt-4o'; it serves: qwen-72b"):
            ChatEndpoint(server.base_url, None).preflight("gpt-4o")


def test_preflight_passes_an_endpoint_without_a_model_list():
    with StubChatServer(lambda request: "unused", models=None) as server:
        ChatEndpoint(server.base_url, None).preflight("any-model")
    assert server.model_lists == [None]  # asked once, without a key


def test_preflight_fails_without_the_key_before_any_request(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with StubChatServer(lambda request: "unused", models=["m"]) as server:
        with pytest.raises(EndpointRequestError, match=f"environment variable {KEY_ENV} is not set"):
            ChatEndpoint(server.base_url, KEY_ENV).preflight("m")
    assert server.model_lists == []


def test_preflight_fails_fast_on_an_unreachable_endpoint():
    with StubChatServer(lambda request: "unused") as server:
        base_url = server.base_url  # closed when the block ends: nothing listens there any more
    started = time.monotonic()
    with pytest.raises(EndpointUnavailableError, match=r"/models failed 3 times in a row; last failure: APIConnectionError"):
        ChatEndpoint(base_url, None, max_retries=6).preflight("m")
    assert time.monotonic() - started < 10  # two retries at most, not six


def test_preflight_reports_a_refused_key_without_it(monkeypatch):
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    with StubChatServer(lambda request: "unused", models=["m"], api_key="sk-the-right-one") as server:
        with pytest.raises(EndpointRequestError, match=r"/models refused the request with HTTP 401: Incorrect API key provided: \*\*\*") as error:
            ChatEndpoint(server.base_url, KEY_ENV).preflight("m")
    assert PLANTED_KEY not in str(error.value) and len(server.model_lists) == 1
