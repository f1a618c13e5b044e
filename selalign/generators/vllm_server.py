"""``generator=vllm_server``: ``vllm serve`` on the policy's weights, generation through its OpenAI-compatible API.

When a call has something to generate, the server command (``command``, default ``vllm serve``) is started on
``policy.name_or_path`` (the run's ``policy/`` folder, or ``model.name_or_path``) on a free port of ``host``, in its
own process group, its output written to ``<log_dir>/vllm_server.log``. The generator waits until ``GET /health``
answers 200 (at most ``startup_timeout_s``; a server that exits first is reported with its exit code and the end of
its log), then generates through ``OpenAIGenerator`` with ``max_concurrency`` requests in flight, and stops the server
(SIGTERM to its process group, SIGKILL after ``stop_timeout_s``) when the call ends, or, inside
``with generator.session():``, when the session ends; on errors too. Another policy stops the server and starts one
on the new weights.

A policy whose tokenizer has no chat template is served with ``PLAIN_CHAT_TEMPLATE``, the plain
``[bos]User: ...\\nAssistant:`` format its training used, so prompts are the ``hf`` generator's.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selalign.generators.base import Conversation, GenerationError, Generator, Policy, Sampling
from selalign.generators.openai import OpenAIGenerator
from selalign.generators.vllm import INSTALL_HINT

log = logging.getLogger(__name__)

SERVED_MODEL_NAME = "policy"
LOG_FILE = "vllm_server.log"
# selalign.data.formats.render_prompt's plain format as a chat template (bos, "Role: content\n" per message, "Assistant:").
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def free_port(host: str) -> int:
    """A TCP port of ``host`` that nothing listens on now (the system's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServerProcess:
    """One server process: started with ``argv``, waited for until healthy, stopped with its whole process group."""

    def __init__(self, argv: list[str], health_url: str, log_path: Path) -> None:
        self.argv, self.health_url, self.log_path = argv, health_url, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout_s: float, poll_s: float = 0.25) -> None:
        """Return once ``health_url`` answers 200; raise ``GenerationError`` if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise GenerationError(
                    f"the server ({' '.join(self.argv)}) exited with code {code} before it was healthy; "
                    f"the end of its log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or not healthy yet
            if time.monotonic() > deadline:
                raise GenerationError(
                    f"the server ({' '.join(self.argv)}) was not healthy at {self.health_url} after {timeout_s:.0f} s; "
                    f"the end of its log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(poll_s)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to the server's process group, SIGKILL when it has not exited after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        for sent in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sent)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                log.warning("the server (PID %d) did not stop within %.0f s of %s", self.process.pid, timeout_s, sent.name)
        self.process.wait()


class VLLMServerGenerator(Generator):
    """``vllm serve`` started and stopped around generation (see the module docstring for the lifecycle).

    ``dtype``, ``gpu_memory_utilization``, ``max_model_len`` and ``extra_args`` become ``vllm serve`` arguments;
    ``max_concurrency``, ``timeout_s`` and ``max_retries`` are the requests' (``OpenAIGenerator``'s); ``log_dir`` holds
    the server's log (None: a new temporary folder).
    """

    needs_tokenizer = True

    def __init__(
        self,
        command: Sequence[str] = ("vllm", "serve"),
        host: str = "127.0.0.1",
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 900.0,
        stop_timeout_s: float = 60.0,
        max_concurrency: int = 256,
        timeout_s: float = 600.0,
        max_retries: int = 6,
        log_dir: str | None = None,
    ) -> None:
        self.command = [str(part) for part in command]
        if not self.command:
            raise ValueError("command is empty; give the server executable and its subcommand, e.g. [vllm, serve]")
        if shutil.which(self.command[0]) is None:
            raise FileNotFoundError(
                f"generator=vllm_server runs `{' '.join(self.command)}`, but {self.command[0]!r} is not an executable on PATH: "
                f"install vLLM ({INSTALL_HINT}) or set generator.command to the server's command"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.host, self.dtype = host, dtype
        self.gpu_memory_utilization, self.max_model_len = gpu_memory_utilization, max_model_len
        self.extra_args = [str(arg) for arg in extra_args]
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.log_dir = log_dir
        self._server: ServerProcess | None = None
        self._serving: str | None = None
        self._client: OpenAIGenerator | None = None

    def __repr__(self) -> str:
        return f"VLLMServerGenerator(command={self.command!r}, dtype={self.dtype!r})"

    @property
    def identity(self) -> dict[str, Any]:
        return {"engine": "vllm", "dtype": self.dtype, **({"server_args": self.extra_args} if self.extra_args else {})}

    def server_argv(self, policy: Policy, port: int, chat_template: Path | None) -> list[str]:
        """The server's command line for ``policy`` on ``port``."""
        argv = [*self.command, str(policy.name_or_path), "--host", self.host, "--port", str(port), "--served-model-name", SERVED_MODEL_NAME,
                "--dtype", self.dtype, "--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.max_model_len is not None:
            argv += ["--max-model-len", str(self.max_model_len)]
        if policy.revision:
            argv += ["--revision", policy.revision]
        if policy.trust_remote_code:
            argv += ["--trust-remote-code"]
        if chat_template is not None:
            argv += ["--chat-template", str(chat_template)]
        return argv + self.extra_args

    def _client_for(self, policy: Policy) -> OpenAIGenerator:
        """The client of a healthy server on ``policy``'s weights, started when there is none."""
        if policy.name_or_path is None:
            raise ValueError("generator=vllm_server serves the policy's weights: give the Policy its name_or_path (folder or hub id)")
        if policy.tokenizer is None:
            raise ValueError("generator=vllm_server checks the policy's tokenizer for a chat template: give the Policy its tokenizer")
        if self._client is not None and self._serving == policy.name_or_path:
            return self._client
        self.release()
        folder = Path(self.log_dir).expanduser() if self.log_dir else Path(tempfile.mkdtemp(prefix="selalign-vllm-"))
        folder.mkdir(parents=True, exist_ok=True)
        chat_template = None
        if not policy.tokenizer.chat_template:
            chat_template = folder / "plain_chat_template.jinja"
            chat_template.write_text(PLAIN_CHAT_TEMPLATE)
        port = free_port(self.host)
        server = ServerProcess(self.server_argv(policy, port, chat_template), f"http://{self.host}:{port}/health", folder / LOG_FILE)
        self._server = server
        log.info("starting %s (log: %s)", " ".join(server.argv), server.log_path)
        started = time.monotonic()
        try:
            server.start()
            server.wait_healthy(self.startup_timeout_s)
        except OSError as error:
            self.release()
            raise GenerationError(f"could not start the server `{' '.join(server.argv)}`: {error}") from None
        except BaseException:
            self.release()  # a server that is not healthy is stopped at once, in a session too
            raise
        log.info("the server on %s is healthy after %.0f s", policy.name_or_path, time.monotonic() - started)
        self._serving = policy.name_or_path
        self._client = OpenAIGenerator(f"http://{self.host}:{port}/v1", SERVED_MODEL_NAME, api_key_env=None,
                                       max_concurrency=self.max_concurrency, timeout_s=self.timeout_s, max_retries=self.max_retries)
        return self._client

    def generate_uncached(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, on_answer: Callable[[int, str], None]) -> None:
        self._client_for(policy).generate_uncached(policy, conversations, sampling, on_answer)

    def release(self) -> None:
        """Stop the server, if one runs."""
        server, self._server, self._serving, self._client = self._server, None, None, None
        if server is not None:
            server.stop(self.stop_timeout_s)
