"""A local OpenAI-compatible chat server whose replies come from a Python function: judges tested offline.

    with StubChatServer(lambda request: "Rating: [[7]]") as server:
        judge = OpenAIJudge(base_url=server.base_url, model="stub", api_key_env=None)

``reply`` gets the decoded request body (``{"model", "messages", ...}``) and returns the reply text, or a
``StubReply`` to answer with another status or after a delay. ``server.requests`` lists every request received
(body and Authorization header), in arrival order. ``benchmark_verdict`` replies to any benchmark's judge prompt.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class StubReply:
    """Reply ``content`` with HTTP ``status`` and extra ``headers`` after ``delay_s`` seconds.

    A non-200 status sends ``content`` as the error message.
    """

    content: str
    status: int = 200
    delay_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedRequest:
    body: dict[str, Any]
    authorization: str | None


ReplyFunction = Callable[[dict[str, Any]], str | StubReply]


def benchmark_verdict(request: dict[str, Any]) -> str:
    """A verdict in whichever format the judge prompt asks for: AlpacaEval ``M``, Arena-Hard ``[[A>B]]``, MT-Bench
    ``[[8]]`` for a turn-1 grading and ``[[6]]`` for a turn-2 grading."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if "Best Model Identifier" in user:
        return "M"
    if "[[A>>B]]" in system:
        return "After comparing both: [[A>B]]"
    return "Rating: [[6]]" if "### Assistant A:" in user else "Rating: [[8]]"


class StubChatServer:
    """Serves ``POST /v1/chat/completions`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, reply: ReplyFunction) -> None:
        self.reply = reply
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="stub-chat-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> StubChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with stub._lock:
                    stub.requests.append(ReceivedRequest(body=body, authorization=self.headers.get("Authorization")))
                reply = stub.reply(body)
                if isinstance(reply, str):
                    reply = StubReply(reply)
                time.sleep(reply.delay_s)
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": reply.content}}, reply.headers)
                    return
                message = {"role": "assistant", "content": reply.content}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._send(200, {"object": "chat.completion", "model": body.get("model"), "choices": [choice]}, reply.headers)

            def _send(self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
                data = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout being tested)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
                """Keep test and smoke-run output quiet."""

        return Handler
