"""A local OpenAI-compatible chat server whose replies come from a Python function: judges and generators tested offline.

    with StubChatServer(lambda request: "Rating: [[7]]") as server:
        judge = OpenAIJudge(base_url=server.base_url, model="stub", api_key_env=None)

``reply`` gets the decoded request body (``{"model", "messages", ...}``) and returns the reply text, or a
``StubReply`` to answer with another status or after a delay. ``server.requests`` lists every chat request received
(body and Authorization header), in arrival order; ``server.model_lists`` the Authorization header of every
``GET /v1/models``. ``models`` is the model list it serves (None: ``/v1/models`` answers 404, as endpoints without
a model list do); ``GET /health`` answers 200. With ``api_key`` set, a request that does not carry it gets HTTP 401
quoting the key it sent (as hosted APIs do). ``benchmark_verdict`` replies to any benchmark's judge prompt.

Run as a script, it stands in for ``vllm serve`` (``generator.command=[python, tests/support/stub_server.py]``)::

    python tests/support/stub_server.py <model> --host 127.0.0.1 --port 8123 --served-model-name policy [vllm args ...]

and answers every chat request with ``echo_reply`` (a request for another model name gets 404, as from vLLM). Its
``--fake-*`` options act out what a test needs: ``--fake-pid-file`` (append its PID, one line per start),
``--fake-request-log`` (append each chat request as a JSON line), ``--fake-argv-file`` (append its arguments as a
JSON line), ``--fake-exit-code N`` (exit with N before serving), ``--fake-never-healthy`` (``/health`` answers 503),
``--fake-chat-status N`` (chat requests answer HTTP N). Other arguments (``--dtype``, ``--chat-template``, ...) are
accepted and ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class StubReply:
    """Reply ``content`` with HTTP ``status`` and extra ``headers`` after ``delay_s`` seconds.

    A non-200 status sends ``content`` as the error message; ``content=None`` sends a message without content (as a
    refusal does).
    """

    content: str | None
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


def echo_reply(request: dict[str, Any]) -> str:
    """``answer <turn> to: <last user message>``, the turn being the number of user messages so far."""
    turn = sum(message["role"] == "user" for message in request["messages"])
    return f"answer {turn} to: {request['messages'][-1]['content']}"


class StubChatServer:
    """Serves ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health`` on ``host``:``port`` (0: a free
    port) from a background thread."""

    def __init__(
        self, reply: ReplyFunction, models: Sequence[str] | None = None, host: str = "127.0.0.1", port: int = 0, healthy: bool = True,
        api_key: str | None = None,
    ) -> None:
        self.reply = reply
        self.api_key = api_key
        self.models = None if models is None else list(models)
        self.healthy = healthy
        self.requests: list[ReceivedRequest] = []
        self.model_lists: list[str | None] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
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
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.rstrip("/")
                if path == "/health":
                    self._send(200 if stub.healthy else 503, {})
                elif path == "/v1/models":
                    with stub._lock:
                        stub.model_lists.append(self.headers.get("Authorization"))
                    if self._refused():
                        return
                    if stub.models is None:
                        self._send(404, {"error": {"message": "no model list here"}})
                    else:
                        self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "stub"} for name in stub.models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with stub._lock:
                    stub.requests.append(ReceivedRequest(body=body, authorization=self.headers.get("Authorization")))
                if self._refused():
                    return
                reply = stub.reply(body)
                if isinstance(reply, str):
                    reply = StubReply(reply)
                time.sleep(reply.delay_s)
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": reply.content}}, reply.headers)
                    return
                message = {"role": "assistant", "content": reply.content}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._send(200, {"id": "stub", "object": "chat.completion", "created": 0, "model": body.get("model"), "choices": [choice]}, reply.headers)

            def _refused(self) -> bool:
                """Answer 401 (quoting the key sent) when a key is required and this request lacks it."""
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if stub.api_key is None or sent == stub.api_key:
                    return False
                self._send(401, {"error": {"message": f"Incorrect API key provided: {sent}", "code": "invalid_api_key"}})
                return True

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


def serve_like_vllm(argv: Sequence[str]) -> int:
    """The script mode (see the module docstring): serve until terminated."""
    parser = argparse.ArgumentParser(description="an OpenAI-compatible stand-in for `vllm serve` in tests")
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--fake-pid-file")
    parser.add_argument("--fake-request-log")
    parser.add_argument("--fake-argv-file")
    parser.add_argument("--fake-exit-code", type=int)
    parser.add_argument("--fake-never-healthy", action="store_true")
    parser.add_argument("--fake-chat-status", type=int, default=200)
    args, _ = parser.parse_known_args(argv)
    if args.fake_pid_file:
        with open(args.fake_pid_file, "a") as file:
            file.write(f"{os.getpid()}\n")
    if args.fake_argv_file:
        with open(args.fake_argv_file, "a") as file:
            file.write(json.dumps(list(argv)) + "\n")
    print(f"stub vllm serve {args.model} on {args.host}:{args.port}", flush=True)
    if args.fake_exit_code is not None:
        print("RuntimeError: CUDA out of memory (acted out by the stub)", file=sys.stderr, flush=True)
        return args.fake_exit_code
    served = args.served_model_name or args.model
    log_lock = threading.Lock()

    def reply(request: dict[str, Any]) -> str | StubReply:
        if args.fake_request_log:
            with log_lock, open(args.fake_request_log, "a") as file:
                file.write(json.dumps(request) + "\n")
        if request.get("model") != served:
            return StubReply(f"The model `{request.get('model')}` does not exist.", 404)
        if args.fake_chat_status != 200:
            return StubReply("acted-out server error", args.fake_chat_status)
        return echo_reply(request)

    server = StubChatServer(reply, models=[served], host=args.host, port=args.port, healthy=not args.fake_never_healthy)
    server._server.serve_forever(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(serve_like_vllm(sys.argv[1:]))
