"""GenerationCache: one readable file per model, keys that change with each thing that changes an answer."""

from __future__ import annotations

import json

from selalign.generators import GenerationCache, Sampling
from selalign.store import content_key

IDENTITY = {"name_or_path": "/runs/2026-11-30/policy", "dtype": "float32", "files": [["model.safetensors", 10, 1]]}
CONVERSATION = [{"role": "user", "content": "Hi?"}]


def test_one_file_per_model_named_after_its_folder(tmp_path):
    cache = GenerationCache.in_folder(tmp_path / "generations" / "mt_bench", IDENTITY)
    assert cache.path == tmp_path / "generations" / "mt_bench" / f"policy-{content_key(IDENTITY)[:16]}.jsonl"
    other = GenerationCache.in_folder(tmp_path / "generations" / "mt_bench", {**IDENTITY, "files": [["model.safetensors", 10, 2]]})
    assert other.path != cache.path  # rebuilt weights: another file
    assert GenerationCache.in_folder(tmp_path, {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}).path.name.startswith("Qwen2.5-0.5B-Instruct-")


def test_every_part_of_the_key_counts(tmp_path):
    cache = GenerationCache(tmp_path / "answers.jsonl", IDENTITY)
    key = cache.key({"engine": "hf"}, CONVERSATION, Sampling(8))
    assert key != GenerationCache(tmp_path / "answers.jsonl", {**IDENTITY, "dtype": "bfloat16"}).key({"engine": "hf"}, CONVERSATION, Sampling(8))
    assert key != cache.key({"engine": "vllm", "dtype": "auto"}, CONVERSATION, Sampling(8))
    assert key != cache.key({"engine": "hf"}, [{"role": "user", "content": "Hi!"}], Sampling(8))
    assert key != cache.key({"engine": "hf"}, CONVERSATION, Sampling(9))
    assert key != cache.key({"engine": "hf"}, CONVERSATION, Sampling(8, temperature=0.7))
    assert key != cache.key({"engine": "hf"}, CONVERSATION, Sampling(8, seed=1))
    assert key == GenerationCache(tmp_path / "elsewhere.jsonl", dict(IDENTITY)).key({"engine": "hf"}, [dict(CONVERSATION[0])], Sampling(8))


def test_answers_survive_reopening_and_say_what_they_answer(tmp_path):
    cache = GenerationCache(tmp_path / "answers.jsonl", IDENTITY)
    key = cache.key({"engine": "hf"}, CONVERSATION, Sampling(8))
    cache.put(key, CONVERSATION, "Hello.", {"engine": "hf"}, Sampling(8))
    reopened = GenerationCache(tmp_path / "answers.jsonl", IDENTITY)
    assert reopened.get(key) == "Hello." and reopened.get("missing") is None and len(reopened) == 1
    [row] = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert row == {"key": key, "generator": {"engine": "hf"}, "sampling": {"max_new_tokens": 8, "temperature": 0.0, "seed": 0},
                   "conversation": CONVERSATION, "answer": "Hello."}
