"""Training-step speed and peak memory: selalign against TRL's DPOTrainer and the floor; the reference cache's build.

    python scripts/bench_step.py [--shape tiny|smollm2|qwen05] [--lengths fixed|ultrafeedback] [--pairs 8] [--length 512]
    python scripts/bench_step.py --device cuda --dtype bfloat16 --shape smollm2 --pairs 8 --length 512
    python scripts/bench_step.py --cache-bench --device cuda --dtype bfloat16 --shape smollm2

Every configuration trains the same model (built from a config, random weights) on the same synthetic token pairs,
in the same order and batch size, with AdamW, a linear schedule and gradient clipping at 1.0:

    floor                 policy forward + backward (of its logits' sum) and reference forward on the padded batch,
                          then the same clipping and AdamW step; no log-probs, no objective
    selalign_dpo          PreferenceModule.training_step under lightning.Trainer (method=dpo), batches as training
                          makes them: packed rows, fused output layers (no [rows, T, vocab] logits)
    selalign_dpo_logits   the same module on padded rows through full logits (the reference implementation)
    selective_live        method=selective_dpo, reference run every step (packed, fused)
    selective_cached      the same, batches carrying ref_logps (ref_cache=true): no reference in the process
    lora_two_models       Selective-DPO with a LoRA policy (r 16, every projection) and a separate copy of its base
                          as reference
    lora_adapter_ref      the same, the reference pass run on the policy with its adapters off (ref_model=policy_init)
    trl_dpo               trl.DPOTrainer (if importable) at its best: its fused output layer, padding_free where the
                          version supports it, logging and eval off; batches in the same order
    trl_dpo_grouped       the same on length-grouped batches (transformers' group_by_length): TRL's best on
                          variable lengths

Shapes (``--shape``; ``custom`` takes --hidden, --layers, ...):
    tiny      Llama, hidden 384, 4 layers, 6 heads, 2 kv heads, intermediate 1024, vocab 16384 (CPU)
    smollm2   SmolLM2-135M: Llama, hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152, tied
    qwen05    Qwen2.5-0.5B: Qwen2 (q/k/v biases), hidden 896, 24 layers, 14 heads, 2 kv heads, intermediate 4864,
              vocab 151936, tied
``--ref-scale 8`` makes the reference of the floor and the live configurations about 8x the policy: the same family,
twice as wide (heads and kv heads doubled, the same head size), twice as deep, with an MLP 2.5 times as wide
(1.07B parameters against SmolLM2's 135M, 7.9x; 3.76B against Qwen2.5-0.5B's 494M, 7.6x).

Lengths (``--lengths``):
    fixed          prompt a quarter of --length, chosen the rest, rejected half to all of it: every batch pads to --length
    ultrafeedback  like UltraFeedback: prompt ~ lognormal(median 150, sigma 0.5) in [16, 512] tokens, each response
                   ~ lognormal(median 300, sigma 0.7) in [50, 800]; random batches of 8 pairs are 47% padding,
                   length-grouped ones 20% (printed with the table)

Each configuration runs in a fresh subprocess, so its peak memory is its own: on CPU the peak resident set
(ru_maxrss) minus the resident set after importing its libraries, on GPU ``torch.cuda.max_memory_allocated``;
both include the weights. The configurations run round-robin ``--repeats`` times; the table keeps each one's
fastest run. Steps are timed after ``--warmup`` untimed steps, from batch on device to optimizer step done.
Tokens/s counts real (non-padding) tokens: prompt + response of both sequences of every pair.

``--cache-bench`` times building the reference cache (``selalign.refcache.compute_share``, length-sorted batches of
``--pairs`` pairs) on ``--device`` in ``--dtype`` and on the CPU in float32 with all cores, the same model and pairs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial

import torch

CONFIGS = ["floor", "selalign_dpo", "selalign_dpo_logits", "selective_live", "selective_cached", "lora_two_models", "lora_adapter_ref",
           "trl_dpo", "trl_dpo_grouped"]
_SELALIGN = ["lightning", "selalign.module", "selalign.objectives", "selalign.data"]
LIBRARIES = {config: _SELALIGN for config in CONFIGS} | {"floor": ["transformers", "selalign.data"], "trl_dpo": ["datasets", "transformers", "trl"],
                                                          "trl_dpo_grouped": ["datasets", "transformers", "trl"]}
LORA = ["lightning", "selalign.module", "selalign.objectives", "selalign.data", "peft"]
LIBRARIES |= {"lora_two_models": LORA, "lora_adapter_ref": LORA}
SHAPES = {
    "tiny": dict(family="llama", hidden=384, layers=4, heads=6, kv_heads=2, intermediate=1024, vocab=16384, tied_embeddings=False),
    "smollm2": dict(family="llama", hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152, tied_embeddings=True),
    "qwen05": dict(family="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied_embeddings=True),
}
PAD_ID = 0
CLOCK = "wall"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=[*SHAPES, "custom"], help="model shape preset (custom: the flags below)")
    parser.add_argument("--family", default="llama", choices=["llama", "qwen2"])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--tied-embeddings", action="store_true", help="output layer shares the input embedding")
    parser.add_argument("--ref-scale", type=int, default=1, choices=[1, 8], help="reference about this many times the policy's size")
    parser.add_argument("--lengths", default="fixed", choices=["fixed", "ultrafeedback"])
    parser.add_argument("--pairs", type=int, default=2, help="preference pairs per step (2x sequences)")
    parser.add_argument("--length", type=int, default=128, help="fixed lengths: tokens per sequence, prompt + response")
    parser.add_argument("--ratio", type=float, default=0.4, help="Selective-DPO's share of kept tokens")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, round-robin")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="cpu: the process's CPU time, steadier than wall time on a shared machine (use with --threads 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and compute (bfloat16: pure bf16 training)")
    parser.add_argument("--configs", default="floor,selalign_dpo,selalign_dpo_logits,selective_live,selective_cached,trl_dpo",
                        help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    parser.add_argument("--sync-check", action="store_true", help="CUDA only: list host-device syncs in selalign's step, then exit")
    parser.add_argument("--cache-bench", action="store_true", help="time the reference cache's build on --device and on the CPU, then exit")
    parser.add_argument("--cache-pairs", type=int, default=256, help="--cache-bench: pairs on --device (the CPU gets an eighth)")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args(argv)
    if args.shape != "custom":
        for key, value in SHAPES[args.shape].items():
            setattr(args, key, value)
    return args


# ---------------------------------------------------------------- shared set-up


def model_config(args, scale: int = 1):
    """The policy's config, or (scale 8) the reference's, about 8x larger in the same family."""
    from transformers import LlamaConfig, Qwen2Config

    hidden, layers, intermediate, heads, kv_heads = args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads
    if scale == 8:  # twice as wide (the same head size), twice as deep, an MLP 2.5 times as wide: about 8x the parameters
        hidden, layers, intermediate, heads, kv_heads = 2 * hidden, 2 * layers, 5 * intermediate // 2, 2 * heads, 2 * kv_heads
    common = dict(vocab_size=args.vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, max_position_embeddings=4096, tie_word_embeddings=args.tied_embeddings, pad_token_id=PAD_ID,
                  bos_token_id=1, eos_token_id=2, attn_implementation="sdpa")
    return (Qwen2Config if args.family == "qwen2" else LlamaConfig)(**common)


def build_model(args, seed: int, scale: int = 1):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    torch.manual_seed(seed)
    with torch.device(args.device):  # initialised where it runs: fast on GPU
        model = (Qwen2ForCausalLM if args.family == "qwen2" else LlamaForCausalLM)(model_config(args, scale))
    return model.to(dtype=getattr(torch, args.dtype))


def model_size(args, scale: int = 1) -> tuple[int, float]:
    """(parameters, MiB of weights) of a benchmark model, without allocating it."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    with torch.device("meta"):
        model = (Qwen2ForCausalLM if args.family == "qwen2" else LlamaForCausalLM)(model_config(args, scale))
    parameters = sum(p.numel() for p in model.parameters())
    return parameters, parameters * getattr(torch, args.dtype).itemsize / 2**20


def synthetic_pairs(args, count: int, seed: int = 0) -> list[dict]:
    """Token pairs of the chosen length distribution (``--lengths``)."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, args.vocab, (n,), generator=generator).tolist()

    def lognormal(median: float, sigma: float, low: int, high: int) -> int:
        return int((median * torch.exp(sigma * torch.randn(1, generator=generator))).round().clamp(low, high))

    pairs = []
    for index in range(count):
        if args.lengths == "ultrafeedback":
            prompt, chosen, rejected = lognormal(150, 0.5, 16, 512), lognormal(300, 0.7, 50, 800), lognormal(300, 0.7, 50, 800)
        else:
            prompt = args.length // 4
            chosen = args.length - prompt
            rejected = int(torch.randint(chosen // 2, chosen + 1, (1,), generator=generator))
        pairs.append({"index": index, "id": str(index), "prompt_ids": tokens(prompt), "chosen_ids": tokens(chosen), "rejected_ids": tokens(rejected)})
    return pairs


def order_pairs(args, pairs: list[dict], grouped: bool) -> list[dict]:
    """The pairs in the order of random batches (as generated) or of length-grouped ones (transformers' group_by_length,
    ``selalign.data.sampler.LengthGroupedBatchSampler``)."""
    if not grouped:
        return pairs
    from selalign.data.sampler import LengthGroupedBatchSampler, pair_lengths

    batches = LengthGroupedBatchSampler(pair_lengths(pairs), args.pairs, seed=0).epoch_batches()
    return [pairs[i] for batch in batches for i in batch]


def padding_shares(args) -> tuple[float, float]:
    """Share of padded token slots in random and in length-grouped batches of --pairs pairs (2000 pairs)."""
    pairs = synthetic_pairs(args, 2000, seed=1)

    def share(ordered):
        real = slots = 0
        for start in range(0, len(ordered), args.pairs):
            batch = ordered[start : start + args.pairs]
            length = max(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in batch)
            real += real_tokens(batch)
            slots += 2 * len(batch) * length
        return 1 - real / slots

    return share(pairs), share(order_pairs(args, pairs, grouped=True))


def real_tokens(pairs: list[dict]) -> int:
    return sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)


def clock() -> float:
    """Seconds on the chosen clock (``--clock``): wall time, or this process's CPU time (user + system)."""
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def optimizer_factory(lr: float = 1e-5):
    return partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)


def scheduler_factory():
    from transformers import get_scheduler

    return partial(get_scheduler, name="linear", num_warmup_steps=0)


# ---------------------------------------------------------------- configurations (each in its own process)


def run_floor(args, pairs: list[dict]) -> list[float]:
    from selalign.data import PreferenceCollator

    policy, reference = build_model(args, seed=0).train(), build_model(args, seed=1, scale=args.ref_scale).eval().requires_grad_(False)
    optimizer = optimizer_factory()(policy.parameters())
    total = args.warmup + args.steps
    scheduler = scheduler_factory()(optimizer=optimizer, num_training_steps=total)
    collate = PreferenceCollator(PAD_ID, packing=False)
    times = []
    for step in range(total):
        batch = collate(pairs[step * args.pairs : (step + 1) * args.pairs])
        input_ids, attention_mask = batch["input_ids"].to(args.device), batch["attention_mask"].to(args.device)
        synchronize(args.device)
        start = clock()
        with torch.no_grad():
            reference(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.sum().backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        synchronize(args.device)
        times.append(clock() - start)
    return times[args.warmup :]


def run_selalign(args, pairs: list[dict], config: str) -> list[float]:
    import lightning as L
    from torch.utils.data import DataLoader

    from selalign.data import PreferenceCollator
    from selalign.module import PreferenceModule
    from selalign.objectives import DPO, SelectiveDPO

    class FullLogitsModule(PreferenceModule):
        """The reference implementation: every model through its full logits (``token_logps(fused=False)``)."""

        def _token_logps(self, model, batch, rows, keep_distributions):
            from selalign.logprobs import token_logps

            return token_logps(model, batch, rows, self.vocab_size, keep_distributions, fused=False)

    if config == "selective_cached":  # what ref_cache=true attaches: per-token reference log-probs of each response
        generator = torch.Generator().manual_seed(1)
        for pair in pairs:
            pair["cached_logps"] = {"reference": (-5 * torch.rand(len(pair["chosen_ids"]), generator=generator),
                                                  -5 * torch.rand(len(pair["rejected_ids"]), generator=generator))}

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            synchronize(args.device)
            self.start = clock()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            synchronize(args.device)
            self.times.append(clock() - self.start)

    objective = DPO(beta=0.1) if config.startswith("selalign_dpo") else SelectiveDPO(beta=0.1, ratio=args.ratio)
    policy = build_model(args, seed=0)
    reference = None if config == "selective_cached" else build_model(args, seed=1, scale=args.ref_scale)
    if config.startswith("lora"):
        from selalign.models import AdapterReference
        from selalign.settings.sentiment.lora import with_lora

        policy = with_lora(policy, r=16)
        reference = AdapterReference(policy) if config == "lora_adapter_ref" else build_model(args, seed=0)
    module_class = FullLogitsModule if config == "selalign_dpo_logits" else PreferenceModule
    module = module_class(policy, reference, objective, optimizer_factory(), scheduler_factory(), vocab_size=args.vocab)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
        precision="bf16-true" if args.dtype == "bfloat16" else "32-true",
        max_steps=args.warmup + args.steps, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(),
    )
    collator = PreferenceCollator(PAD_ID, packing=config != "selalign_dpo_logits")
    trainer.fit(module, train_dataloaders=DataLoader(pairs, batch_size=args.pairs, collate_fn=collator))
    return timer.times[args.warmup :]


def run_trl(args, pairs: list[dict]) -> tuple[list[float], bool]:
    import datasets
    from tokenizers import Tokenizer, models
    from torch.utils.data import SequentialSampler
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *unused, **unused_kwargs):
            return dataset  # the pairs are token ids already

        def _get_train_sampler(self, *unused, **unused_kwargs):
            return SequentialSampler(self.train_dataset)  # the pairs come in the benchmark's order (random or grouped)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_step_begin(self, *unused, **unused_kwargs):
            synchronize(args.device)
            self.start = clock()

        def on_step_end(self, *unused, **unused_kwargs):
            synchronize(args.device)
            self.times.append(clock() - self.start)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<pad>": PAD_ID, "<bos>": 1, "<eos>": 2}, unk_token="<pad>")),
        pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
    )
    dataset = datasets.Dataset.from_list([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs])
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.pairs, max_steps=args.warmup + args.steps,
        learning_rate=1e-5, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
        max_grad_norm=1.0, beta=0.1, max_length=None, precompute_ref_log_probs=False, padding_free=True,
        gradient_checkpointing=False, bf16=args.dtype == "bfloat16", fp16=False, use_cpu=args.device == "cpu",
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    timer = StepTimer()
    trainer = PretokenizedDPOTrainer(
        model=build_model(args, seed=0), ref_model=build_model(args, seed=1, scale=args.ref_scale), args=config, train_dataset=dataset,
        processing_class=tokenizer, callbacks=[timer],
    )
    trainer.train()
    return timer.times[args.warmup :], bool(getattr(trainer, "padding_free", False))


def run_one(args) -> dict:
    """One configuration in this process; returns its step times, real tokens per step and peak memory."""
    global CLOCK
    CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    pairs = order_pairs(args, synthetic_pairs(args, args.pairs * total), grouped=args.run.endswith("_grouped"))
    for module in LIBRARIES[args.run]:  # imported before the baseline, so that the memory delta is the training's own
        importlib.import_module(module)
    baseline_mib = 0.0 if args.device.startswith("cuda") else resident_mib()
    extra = {}
    if args.run == "floor":
        times = run_floor(args, pairs)
    elif args.run.startswith("trl"):
        times, extra["padding_free"] = run_trl(args, pairs)
    else:
        times = run_selalign(args, pairs, args.run)
    if args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    tokens = [real_tokens(pairs[step * args.pairs : (step + 1) * args.pairs]) for step in range(args.warmup, total)]
    return {"times": times, "tokens": tokens[: len(times)], "peak_mib": peak_mib - baseline_mib} | extra


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sync_check(args) -> str:
    """Host-device synchronizations in PreferenceModule.training_step + backward + AdamW step, by source line.

    Runs the module outside Lightning (whose loop adds its own), with ``torch.cuda.set_sync_debug_mode``.
    """
    import collections
    import warnings

    from selalign.data import PreferenceCollator
    from selalign.module import PreferenceModule
    from selalign.objectives import DPO, SelectiveDPO

    pairs = synthetic_pairs(args, args.pairs)
    batch = move(PreferenceCollator(PAD_ID)(pairs), args.device)
    lines = []
    for name, objective in [("dpo", DPO()), ("selective_dpo", SelectiveDPO(ratio=args.ratio))]:
        module = PreferenceModule(build_model(args, seed=0), build_model(args, seed=1), objective, optimizer_factory(), vocab_size=args.vocab)
        optimizer = module.configure_optimizers()
        for step in range(2):  # the first step warms up; the second is inspected
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn" if step else "default")
                module.training_step(batch, step).backward()
                torch.nn.utils.clip_grad_norm_(module.policy.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
                torch.cuda.set_sync_debug_mode("default")
        syncs = collections.Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchronizing" in str(w.message))
        lines.append(f"{name}: {sum(syncs.values())} host-device syncs in one step" + "".join(f"\n    {n} x {where}" for where, n in syncs.most_common()))
    return "\n".join(lines)


def move(batch: dict, device: str) -> dict:
    return {k: move(v, device) if isinstance(v, dict) else v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------- the reference cache's build


class SyntheticPairs:
    """What ``selalign.refcache.compute_share`` reads of a datamodule: ``records()`` and the tokenizer's pad id."""

    def __init__(self, pairs: list[dict]):
        self.pairs, self.pad_to_multiple_of = pairs, 1
        self.tokenizer = type("Tokenizer", (), {"pad_token_id": PAD_ID})()

    def records(self) -> list[dict]:
        return self.pairs


def time_cache_build(args, device: str, dtype: str, count: int) -> tuple[float, int]:
    """(seconds, real tokens) of ``compute_share`` over ``count`` pairs in length-sorted batches of --pairs."""
    from selalign.models import freeze
    from selalign.refcache import compute_share

    settings = argparse.Namespace(**vars(args) | {"device": device, "dtype": dtype})
    model = freeze(build_model(settings, seed=1, scale=args.ref_scale))
    pairs = synthetic_pairs(args, count, seed=2)
    compute_share(model, SyntheticPairs(pairs[: args.pairs]), args.pairs, torch.device(device), args.vocab)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    compute_share(model, SyntheticPairs(pairs), args.pairs, torch.device(device), args.vocab)
    synchronize(device)
    return time.perf_counter() - start, real_tokens(pairs)


def cache_bench(args) -> str:
    parameters, _ = model_size(args, args.ref_scale)
    cpu_pairs = max(args.pairs, args.cache_pairs // 8)
    threads = torch.get_num_threads()
    lines = [environment_line(args), f"reference cache build: {args.family}, {parameters / 1e6:.0f}M parameters, {args.lengths} lengths, batches of {args.pairs} pairs", ""]
    here_seconds, here_tokens = time_cache_build(args, args.device, args.dtype, args.cache_pairs)
    cpu_seconds, cpu_tokens = time_cache_build(args, "cpu", "float32", cpu_pairs)
    here_rate, cpu_rate = here_tokens / here_seconds, cpu_tokens / cpu_seconds
    lines += [
        f"{args.device} ({args.dtype}): {args.cache_pairs} pairs in {here_seconds:.2f} s, {here_rate:.0f} tokens/s",
        f"cpu (float32, {threads} threads): {cpu_pairs} pairs in {cpu_seconds:.2f} s, {cpu_rate:.0f} tokens/s",
        f"{'cache build speed-up, ' + args.device + ' / cpu':38s} {here_rate / cpu_rate:8.1f}  target >= 20",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- driver


def trl_importable() -> bool:
    try:
        import trl  # noqa: F401
    except Exception:
        return False
    return True


def run_in_subprocess(config: str, argv: list[str]) -> dict | None:
    result = subprocess.run([sys.executable, __file__, *argv, "--run", config], capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        print(f"  {config} failed (exit {result.returncode}):\n{result.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


NAMES = {
    "floor": "floor (fwd+bwd, ref fwd, AdamW)", "selalign_dpo": "selalign dpo (packed, fused)", "selalign_dpo_logits": "selalign dpo (padded, full logits)",
    "selective_live": "selalign selective_dpo (live ref)", "selective_cached": "selalign selective_dpo (cached ref)",
    "lora_two_models": "selective_dpo LoRA, separate ref", "lora_adapter_ref": "selective_dpo LoRA, adapters-off ref",
    "trl_dpo": "trl DPOTrainer", "trl_dpo_grouped": "trl DPOTrainer (group_by_length)",
}


def table(args, results: dict[str, dict], environment: str) -> str:
    parameters, weights_mib = model_size(args)
    memory = "peak MiB" if args.device.startswith("cuda") else "peak+ MiB"
    lengths = f"{args.length} tokens" if args.lengths == "fixed" else "UltraFeedback-like lengths"
    random_share, grouped_share = padding_shares(args)
    lines = [
        environment,
        f"model: {args.family}, {parameters / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), {args.dtype} on {args.device}",
        f"reference: {model_size(args, args.ref_scale)[0] / 1e6:.1f}M parameters" if args.ref_scale != 1 else "reference: the policy's shape",
        f"batch: {args.pairs} pairs, {lengths} (padding: {random_share:.0%} of random batches, {grouped_share:.0%} of length-grouped ones); "
        f"best of {args.repeats} runs x {args.steps} timed steps, {args.clock} clock",
        "",
        f"{'configuration':38s} {'step s':>8s} {'median s':>9s} {'pairs/s':>8s} {'tokens/s':>9s} {memory:>10s}",
    ]
    rate = {config: sum(r["tokens"]) / sum(r["times"]) for config, r in results.items()}
    for config, r in results.items():
        name = NAMES[config] + (" [padding_free]" if r.get("padding_free") else "")
        lines.append(f"{name:38s} {min(r['times']):8.3f} {statistics.median(r['times']):9.3f} {args.pairs * len(r['times']) / sum(r['times']):8.2f} "
                     f"{rate[config]:9.0f} {r['peak_mib']:10.0f}")
    if not args.device.startswith("cuda"):
        lines.append("(peak+: peak resident set minus the resident set after importing the configuration's libraries)")
    if any(config.startswith("trl") for config in results) and not any(r.get("padding_free") for c, r in results.items() if c.startswith("trl")):
        lines.append("(this TRL version runs padded batches: it turns padding_free off)")
    step = {config: sum(r["times"]) / len(r["times"]) for config, r in results.items()}
    peak = {config: r["peak_mib"] for config, r in results.items()}
    trl = min((c for c in results if c.startswith("trl")), key=lambda c: peak[c], default=None)
    trl_fast = max((c for c in results if c.startswith("trl")), key=lambda c: rate[c], default=None)
    memory_target = {"smollm2": "<= 0.85", "qwen05": "<= 0.60"}.get(args.shape, "")
    cached_target = "<= 0.35" if args.ref_scale == 8 else "<= 0.80"
    ratios = [
        ("peak memory: selalign dpo / trl", peak, "selalign_dpo", trl, memory_target),
        ("step time: selalign dpo / trl", step, "selalign_dpo", trl, "<= 1.00"),
        ("real tokens/s: selalign dpo / best trl", rate, "selalign_dpo", trl_fast, ">= 1.50" if args.lengths == "ultrafeedback" else ""),
        ("peak memory: fused / full logits", peak, "selalign_dpo", "selalign_dpo_logits", ""),
        ("step time: fused / full logits", step, "selalign_dpo", "selalign_dpo_logits", ""),
        ("step time: selalign dpo / floor", step, "selalign_dpo", "floor", "<= 1.15"),
        ("step time: selective live / dpo", step, "selective_live", "selalign_dpo", "<= 1.10"),
        ("step time: selective cached / live", step, "selective_cached", "selective_live", cached_target),
        ("step time: LoRA adapters-off / two models", step, "lora_adapter_ref", "lora_two_models", "<= 1.03"),
        ("peak memory: LoRA adapters-off / two models", peak, "lora_adapter_ref", "lora_two_models", ""),
    ]
    lines += ["", f"{'ratio (mean step times, peaks)':44s} {'value':>8s}  target"]
    for label, values, a, b, target in ratios:
        if a in values and b in values:
            lines.append(f"{label:44s} {values[a] / values[b]:8.3f}  {target}")
    if "selective_cached" in results and "selective_live" in results:
        saved = peak["selective_live"] - peak["selective_cached"]
        lines.append(f"{'memory saved by the cache (MiB)':44s} {saved:8.0f}  ~ reference weights, {model_size(args, args.ref_scale)[1]:.0f} MiB")
    if "lora_adapter_ref" in results and "lora_two_models" in results:
        saved = peak["lora_two_models"] - peak["lora_adapter_ref"]
        lines.append(f"{'memory saved by the adapters-off ref (MiB)':44s} {saved:8.0f}  ~ base weights, {weights_mib:.0f} MiB")
    return "\n".join(lines)


def environment_line(args) -> str:
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        with open("/proc/cpuinfo") as f:
            device = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if trl_importable():
        import trl

        versions += f", trl {trl.__version__}"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{device}, {args.threads or torch.get_num_threads()} threads{load}, {versions}"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.run:
        print(json.dumps(run_one(args)))
        return
    if args.clock == "cpu" and args.device.startswith("cuda"):
        raise SystemExit("--clock cpu counts CPU work only; time GPU runs on the wall clock")
    if args.sync_check:
        print(sync_check(args) if args.device.startswith("cuda") else "sync check: CUDA only, skipped")
        return
    if args.cache_bench:
        report = cache_bench(args)
        print(report)
        if args.output:
            with open(args.output, "w") as f:
                f.write(report + "\n")
        return
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configurations {sorted(unknown)}; choose from {CONFIGS}")
    if not trl_importable() and any(c.startswith("trl") for c in configs):
        print("trl is not importable: skipping the trl configurations", file=sys.stderr)
        configs = [c for c in configs if not c.startswith("trl")]
    results: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for config in configs:
            outcome = run_in_subprocess(config, argv)
            if outcome is None:
                continue
            print(f"  run {repeat + 1}/{args.repeats} {config}: mean step {statistics.mean(outcome['times']):.3f} s, peak {outcome['peak_mib']:.0f} MiB", file=sys.stderr)
            if config in results:  # keep the fastest run and the lowest peak (other processes share the machine)
                peak = min(outcome["peak_mib"], results[config]["peak_mib"])
                if sum(outcome["times"]) > sum(results[config]["times"]):
                    outcome = results[config]
                outcome["peak_mib"] = peak
            results[config] = outcome
    report = table(args, {c: results[c] for c in configs if c in results}, environment_line(args))
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
