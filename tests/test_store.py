"""The store: content keys, model identity, atomic writes, keyed JSON Lines, build-once under a lock that says who holds it."""

import json
import multiprocessing
import os
import time

import pytest

from selalign.store import BuildLock, KeyedJsonl, atomic_path, build_once, content_key, model_identity


def write_after(seconds: float, text: str):
    def build(path, lock):
        time.sleep(seconds)
        path.write_text(text)
    return build


def test_build_once_builds_then_reuses(tmp_path):
    target = tmp_path / "artifact.json"
    assert build_once(target, write_after(0, "first"), "a test artifact") == target
    assert build_once(target, write_after(0, "second"), "a test artifact").read_text() == "first"


def test_failed_build_leaves_nothing_behind(tmp_path):
    def fail(path, lock):
        path.mkdir()
        (path / "half.bin").write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(tmp_path / "folder", fail, "a failing artifact")
    assert [p.name for p in tmp_path.iterdir()] == ["folder.lock"]


def _build_counting(target, log):
    def build(path, lock):
        with open(log, "a") as file:
            file.write("built\n")
        time.sleep(0.5)
        path.write_text(json.dumps("done"))
    build_once(target, build, "a shared artifact")


def test_concurrent_jobs_build_once(tmp_path):
    target, log = tmp_path / "shared.json", tmp_path / "builds.log"
    jobs = [multiprocessing.get_context("fork").Process(target=_build_counting, args=(target, log)) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=30)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert log.read_text() == "built\n" and json.loads(target.read_text()) == "done"




def test_content_key_ignores_dict_order_and_tells_values_apart():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_model_identity_of_a_folder_changes_when_its_files_change(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    first = model_identity({"_target_": "x.load", "name_or_path": str(tmp_path), "dtype": "float32"})
    assert first["name_or_path"] == str(tmp_path.resolve()) and first["dtype"] == "float32" and "_target_" not in first
    assert first["files"][0][:2] == ("model.safetensors", 5)
    (tmp_path / "model.safetensors").write_bytes(b"123456")
    assert model_identity(tmp_path)["files"] != first["files"]
    assert model_identity("org/hub-model") == {"name_or_path": "org/hub-model"}


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new"


def test_atomic_path_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            (temporary / "weights").write_text(content)
    assert (target / "weights").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_keyed_jsonl_resumes_and_cuts_a_torn_last_line(tmp_path):
    store = KeyedJsonl(tmp_path / "cache.jsonl")
    store.put({"key": "a", "value": 1})
    store.put({"key": "b", "value": 2})
    with open(store.path, "a") as file:
        file.write('{"key": "c", "val')  # a kill in the middle of a line
    reopened = KeyedJsonl(store.path)
    assert len(reopened) == 2 and reopened.get("b") == {"key": "b", "value": 2} and "c" not in reopened
    assert store.path.read_text().endswith("}\n")


def _hold_lock(target, started, release):
    with BuildLock(target, "a slow artifact") as lock:
        lock.report("stage 2 of 5")
        started.set()
        release.wait(30)


def test_a_waiting_build_names_the_holder_and_its_progress(tmp_path):
    context = multiprocessing.get_context("fork")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path / "artifact", started, release))
    holder.start()
    assert started.wait(30)
    messages = []
    waiter = BuildLock(tmp_path / "artifact", "a slow artifact", report_every_s=0.2, say=messages.append)
    context.Process(target=lambda: (time.sleep(1.0), release.set())).start()
    with waiter:
        pass
    holder.join(30)
    assert messages, "the waiting process said nothing"
    assert f"PID {holder.pid}" in messages[0] and "stage 2 of 5" in messages[0] and "a slow artifact" in messages[0]
    assert not any("taking over" in m for m in messages)


def _die_holding(target):
    lock = BuildLock(target, "an artifact")
    lock.__enter__()
    os._exit(1)  # killed mid-build: the kernel releases the lock, the record stays


def test_a_dead_holders_lock_is_taken_over_with_a_message(tmp_path):
    dead = multiprocessing.get_context("fork").Process(target=_die_holding, args=(tmp_path / "artifact",))
    dead.start()
    dead.join(30)
    messages = []
    started = time.monotonic()
    with BuildLock(tmp_path / "artifact", "an artifact", say=messages.append):
        pass
    assert time.monotonic() - started < 5
    assert len(messages) == 1 and "taking over" in messages[0] and f"PID {dead.pid}" in messages[0]
