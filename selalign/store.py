"""The one low-level store every cache and build of selalign goes through.

- ``content_key(material)``: a stable hash of JSON-serialisable material, the key of every cache entry;
- ``model_identity(model)``: what makes a model's outputs what they are (its config and, for a local folder, its
  files' names, sizes and modification times), never a secret;
- ``atomic_path(path)``: write to a temporary path beside ``path``, then rename over it: a kill at any moment leaves
  the old file (or folder) or the new one, never a torn one;
- ``KeyedJsonl``: an append-only JSON Lines file of keyed rows, durable line by line, that resumes on reopening;
- ``build_once(target, build, what)``: build an artifact once under a file lock; concurrent jobs wait for it and are
  told who builds it, since when, and how far it has got.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fcntl

log = logging.getLogger(__name__)


def content_key(material: Any) -> str:
    """Stable sha256 (hex) of JSON-serialisable ``material``, dict keys sorted."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def model_identity(model: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """What makes a model's outputs what they are.

    ``model`` is a hub id or folder, or a model config (``name_or_path`` plus ``dtype``, ``revision``, ...; a
    ``_target_`` key is ignored). For a local folder the path is made absolute and the names, sizes and modification
    times of its files are added, so that rebuilt weights get a new identity.
    """
    identity = {"name_or_path": str(model)} if isinstance(model, (str, os.PathLike)) else {k: v for k, v in dict(model).items() if k != "_target_"}
    folder = Path(str(identity["name_or_path"])).expanduser()
    if folder.is_dir():
        identity["name_or_path"] = str(folder.resolve())
        identity["files"] = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
    return identity


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends without error it is renamed to ``path``.

    Write a file or a folder at the yielded path. A file is flushed to disk before the rename; a folder that replaces
    an existing one is swapped in by two renames. On error the temporary path is removed and ``path`` is untouched.
    A rename within one directory is atomic (a temporary file elsewhere could cross filesystems and be copied).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    remove_path(temporary)
    try:
        yield temporary
        if temporary.is_file():
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
        if temporary.is_dir() and path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            path.rename(old)
            temporary.rename(path)
            remove_path(old)
        else:
            os.replace(temporary, path)
    finally:
        remove_path(temporary)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_jsonl(path: str | os.PathLike[str], rows) -> None:
    """Write ``rows`` (mappings) as JSON Lines, replacing ``path`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def remove_path(path: Path) -> None:
    """Remove a file, a link or a whole folder at ``path``, if anything is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


class KeyedJsonl:
    """Append-only JSON Lines file of rows that each carry a ``"key"``; opening an existing file resumes from it.

    Lines are appended one at a time and flushed to disk (fsync) before the next, so a crash loses at most the line
    being written; a torn last line is cut off when the file is opened again. A later row wins over an earlier one
    with the same key.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(self.path, "r+b") as file:
                file.truncate(len(complete))
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number} is not valid JSON ({error}); remove the line to resume") from None
            self._rows[row["key"]] = row

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def put(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (which has a ``"key"``) and make it durable before returning."""
        line = json.dumps(dict(row), ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        self._rows[row["key"]] = dict(row)


class BuildLock:
    """An exclusive lock on ``<target>.lock`` that says who holds it and how far its build has got.

    The holder writes ``{pid, host, started, what, progress}`` into the lock file and updates ``progress`` as it
    goes (``report``). A process that must wait prints the holder and its progress, then again every
    ``report_every_s`` seconds. The lock is an ``flock``: the kernel releases it when its holder dies, so a dead
    holder's lock is taken over at once, with a message naming it.
    """

    def __init__(self, target: Path, what: str, report_every_s: float = 60.0, say: Callable[[str], None] | None = None):
        self.path = target.with_name(target.name + ".lock")
        self.what, self.report_every_s = what, report_every_s
        self.say = say or (lambda message: log.warning("%s", message))
        self._file = None
        self._holder: dict[str, Any] = {}

    def holder(self) -> dict[str, Any] | None:
        """The holder's record as written in the lock file, or None."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, json.JSONDecodeError):
            return None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        waited_since, last_report = time.monotonic(), -float("inf")
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - last_report >= self.report_every_s:
                    self.say(self._waiting_message(time.monotonic() - waited_since))
                    last_report = time.monotonic()
                time.sleep(min(2.0, self.report_every_s))
        previous = self.holder()
        if previous and previous.get("pid") and previous.get("finished") is None:
            self.say(f"taking over the lock of {self.what}: its holder (PID {previous['pid']} on {previous.get('host')}, "
                     f"started {_clock(previous.get('started'))}) stopped without finishing")
        self._holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": self.what, "progress": None, "finished": None}
        self._write()
        return self

    def report(self, progress: str) -> None:
        """Record how far the build has got (shown to processes waiting for it)."""
        self._holder["progress"] = progress
        self._write()

    def __exit__(self, *exc) -> None:
        self._holder["finished"] = time.time()
        self._write()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()

    def _write(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self._holder))
        self._file.flush()

    def _waiting_message(self, waited_s: float) -> str:
        holder = self.holder() or {}
        who = f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, building since {_clock(holder.get('started'))}"
        progress = f"; its progress: {holder['progress']}" if holder.get("progress") else ""
        return f"waiting {waited_s / 60:.0f} min for {self.what} ({who}{progress}); lock file {self.path}"


def _clock(timestamp: float | None) -> str:
    if not timestamp:
        return "an unknown time"
    minutes = (time.time() - timestamp) / 60
    return f"{time.strftime('%H:%M:%S', time.localtime(timestamp))} ({minutes:.0f} min ago)"


def build_once(target: str | os.PathLike[str], build: Callable[[Path, BuildLock], None], what: str, force: bool = False,
               say: Callable[[str], None] | None = None) -> Path:
    """``target``, built by ``build(temporary path, lock)`` unless it exists; returns ``target``.

    ``build`` writes a file or folder at the path it is given and may call ``lock.report(progress)``; that path is
    renamed to ``target`` only after ``build`` returns (``atomic_path``), so ``target`` is complete whenever it
    exists. Jobs that ask for the same ``target`` at once wait on its ``BuildLock``: one builds, the others find it
    built. ``force`` rebuilds an existing target. A failed build leaves nothing behind.
    """
    target = Path(target).expanduser()
    if target.exists() and not force:
        return target
    with BuildLock(target, what, say=say) as lock:
        if target.exists() and not force:
            return target
        for stale in target.parent.glob(f".{target.name}.*.partial"):  # left by a build that was killed
            remove_path(stale)
        log.info("building %s into %s (once; later runs reuse it)", what, target)
        with atomic_path(target) as temporary:
            build(temporary, lock)
    return target
