"""Speed of the vectorized selection rule against a per-sequence loop (torch.quantile per row).

    python scripts/bench_selection.py [--batch 64] [--length 1024] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from selalign.selection import select_top_tokens


def select_by_loop(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    out = torch.zeros_like(mask)
    for row in range(scores.shape[0]):
        if mask[row].any():
            out[row] = mask[row] & (scores[row] >= torch.quantile(scores[row][mask[row]], 1.0 - ratio))
    return out


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(args.batch, args.length, generator=generator).to(args.device)
    # Response masks of varying length after a prompt, as in real batches.
    starts = torch.randint(0, args.length // 4, (args.batch, 1), generator=generator)
    ends = torch.randint(args.length // 2, args.length + 1, (args.batch, 1), generator=generator)
    positions = torch.arange(args.length)[None]
    mask = ((positions >= starts) & (positions < ends)).to(args.device)
    assert torch.equal(select_top_tokens(scores, mask, args.ratio), select_by_loop(scores, mask, args.ratio))

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    vectorized = best_time(lambda: (select_top_tokens(scores, mask, args.ratio), sync()), args.repeats)
    looped = best_time(lambda: (select_by_loop(scores, mask, args.ratio), sync()), args.repeats)
    print(f"B={args.batch} T={args.length} ratio={args.ratio} device={args.device} threads={torch.get_num_threads()}")
    print(f"select_top_tokens : {vectorized * 1e3:8.3f} ms")
    print(f"per-sequence loop : {looped * 1e3:8.3f} ms")
    print(f"speed-up          : {looped / vectorized:8.1f}x  (target >= 5x on CPU)")


if __name__ == "__main__":
    main()
