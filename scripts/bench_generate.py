"""Output tokens/s of the hf generator against vLLM served through the openai generator, on one model and prompt set.

    python scripts/bench_generate.py --model <folder or hub id> [--prompts 80] [--max-new-tokens 256] [--json results.json]

Both sides answer the first turns of the first ``--prompts`` MT-Bench questions (80: all of them) greedily, at most
``--max-new-tokens`` new tokens each, with the same weights in the same ``--dtype``:

    hf      ``HFGenerator`` (``generator=hf``): transformers' ``generate`` in static batches of ``--hf-batch-size``,
            longest prompts first, on the GPU when there is one
    server  ``VLLMServerGenerator`` (``generator=vllm_server``): ``vllm serve`` on the model, every prompt sent at
            once through the ``openai`` client (``--max-concurrency`` in flight)

Each side is timed from the first prompt sent to the last answer received, after a warm-up call (for vLLM, the
server's start-up is timed apart and left out). Output tokens are the answers' tokens under the model's tokenizer,
counted the same way for both. The script prints both sides, the speed-up (target: >= 10x) and the share of prompts
whose two greedy answers are identical (target: >= 90%), with the versions and the device. Without vLLM (no
``vllm`` executable on PATH) the hf side runs and the script says so and exits with status 2.
``--server-command`` replaces ``vllm serve`` (another build of vLLM, or a stand-in server when testing the script).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selalign.benchmarks import MTBench  # noqa: E402
from selalign.generators import Policy, Sampling  # noqa: E402
from selalign.generators.hf import HFGenerator  # noqa: E402
from selalign.generators.vllm_server import VLLMServerGenerator  # noqa: E402
from selalign.models import load_causal_lm, load_tokenizer  # noqa: E402

SPEEDUP_TARGET, IDENTICAL_TARGET = 10.0, 0.9
NOT_INSTALLED = 2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id (the same weights for both sides)")
    parser.add_argument("--prompts", type=int, default=80, help="MT-Bench first turns, in file order")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16; default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument("--hf-batch-size", type=int, default=8, help="the hf generator's batch (the benchmarks' default)")
    parser.add_argument("--max-concurrency", type=int, default=256, help="requests in flight to the server")
    parser.add_argument("--server-command", default="vllm serve", help="the server command the model is appended to")
    parser.add_argument("--server-args", default="", help="more server arguments, e.g. '--max-model-len 4096'")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for the server to be healthy")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "openai", "vllm"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()})"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def output_tokens(tokenizer, answers: list[str]) -> int:
    return sum(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)


def timed(generate) -> tuple[list[str], float]:
    synchronize()
    started = time.perf_counter()
    answers = generate()
    synchronize()
    return answers, time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    conversations = [[{"role": "user", "content": question.turns[0]}] for question in MTBench().load(limit=args.prompts)]
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.0)
    warm_up = [[{"role": "user", "content": "Say hello."}]]
    command = shlex.split(args.server_command)
    server_missing = shutil.which(command[0]) is None
    results = {"model": args.model, "prompts": len(conversations), "max_new_tokens": args.max_new_tokens, "dtype": dtype,
               "device": device_name(), "versions": versions()}
    print(f"{len(conversations)} MT-Bench first turns, greedy, at most {args.max_new_tokens} new tokens, {args.model} in {dtype} on {results['device']}")
    if server_missing:
        print(f"note: `{command[0]}` is not on PATH, so only the hf side will run")

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=dtype).to(device)
    policy = Policy.from_config({"name_or_path": args.model, "dtype": dtype}, model=model, tokenizer=tokenizer)
    hf = HFGenerator(batch_size=args.hf_batch_size, progress=False)
    hf.generate(policy, warm_up, Sampling(max_new_tokens=8))
    hf_answers, hf_seconds = timed(lambda: hf.generate(policy, conversations, sampling))
    hf_tokens = output_tokens(tokenizer, hf_answers)
    results["hf"] = {"seconds": hf_seconds, "output_tokens": hf_tokens, "tokens_per_s": hf_tokens / hf_seconds, "batch_size": args.hf_batch_size}
    print(f"hf    (batches of {args.hf_batch_size}): {hf_seconds:8.2f} s  {hf_tokens:7d} output tokens  {hf_tokens / hf_seconds:9.1f} tokens/s")
    del model, policy
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    if server_missing:
        what = "vllm is not installed" if command[0] == "vllm" else f"{command[0]} is not installed"
        print(f"{what}: no `{command[0]}` executable on PATH (pip install vllm, on a Linux machine with a CUDA GPU); the server side was not run")
        write(args.json, results)
        return NOT_INSTALLED
    server = VLLMServerGenerator(command=command, dtype=dtype, extra_args=shlex.split(args.server_args), max_concurrency=args.max_concurrency,
                                 startup_timeout_s=args.startup_timeout)
    served = Policy.from_config({"name_or_path": args.model, "dtype": dtype}, tokenizer=tokenizer)
    label = "vllm" if Path(command[0]).name == "vllm" else "server"
    with server.session():
        _, startup_seconds = timed(lambda: server.generate(served, warm_up, Sampling(max_new_tokens=8)))
        server_answers, server_seconds = timed(lambda: server.generate(served, conversations, sampling))
    server_tokens = output_tokens(tokenizer, server_answers)
    identical = sum(a == b for a, b in zip(hf_answers, server_answers, strict=True)) / len(conversations)
    speedup = (server_tokens / server_seconds) / (hf_tokens / hf_seconds)
    results["server"] = {"label": label, "seconds": server_seconds, "output_tokens": server_tokens, "tokens_per_s": server_tokens / server_seconds,
                       "startup_and_warm_up_seconds": startup_seconds, "command": command, "max_concurrency": args.max_concurrency}
    results |= {"speedup": speedup, "identical_greedy_answers": identical}
    print(f"{label:6s}(served, {args.max_concurrency} in flight): {server_seconds:8.2f} s  {server_tokens:7d} output tokens  "
          f"{server_tokens / server_seconds:9.1f} tokens/s  (start-up and warm-up {startup_seconds:.1f} s, not counted)")
    print(f"speed-up (output tokens/s, {label} / hf): {speedup:.2f}x  target >= {SPEEDUP_TARGET:.0f}x: {'met' if speedup >= SPEEDUP_TARGET else 'NOT met'}")
    print(f"identical greedy answers: {identical:.1%}  target >= {IDENTICAL_TARGET:.0%}: {'met' if identical >= IDENTICAL_TARGET else 'NOT met'}")
    print("versions: " + ", ".join(f"{name} {version}" for name, version in results["versions"].items()))
    write(args.json, results)
    return 0


def write(path: Path | None, results: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
