"""Training-step speed and peak memory: selalign DPO and Selective-DPO against TRL's DPOTrainer and the floor.

    python scripts/bench_step.py [--pairs 2] [--length 128] [--hidden 384] [--layers 4] [--vocab 16384]
    python scripts/bench_step.py --device cuda --dtype bfloat16 --pairs 8 --length 512 --hidden 576 --layers 30 \\
        --heads 9 --kv-heads 3 --intermediate 1536 --vocab 49152 --tied-embeddings

Every configuration trains the same Llama-style model (built from a config, random weights), on the same synthetic
token pairs, batch size and length, with AdamW, a linear schedule and gradient clipping at 1.0:

    floor                  policy forward + backward (of its logits' sum) and reference forward on the padded
                           batch, then the same clipping and AdamW step; no log-probs, no objective: the work
                           no DPO trainer can skip
    selalign dpo           PreferenceModule.training_step under lightning.Trainer (method=dpo)
    selective live         the same, method=selective_dpo, reference run every step
    selective cached       the same, batches carrying ref_logps (ref_cache=true): no reference in the process
    trl dpo                trl.DPOTrainer (if importable), precompute_ref_log_probs=False, logging and eval off

Each configuration runs in a fresh subprocess, so its peak memory is its own: on CPU the peak resident set
(ru_maxrss) minus the resident set after importing its libraries, on GPU ``torch.cuda.max_memory_allocated``;
both include the weights. The configurations run round-robin ``--repeats`` times (machine load drifts) and the
table keeps each one's fastest step and lowest peak; a run's steps are timed after ``--warmup`` untimed steps,
from batch on device to optimizer step done (data loading and trainer start-up excluded). Every pair's chosen
response is full length, so every batch is padded to exactly ``--length`` tokens.
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

CONFIGS = ["floor", "selalign_dpo", "selective_live", "selective_cached", "trl_dpo"]
_SELALIGN = ["lightning", "selalign.module", "selalign.objectives", "selalign.data"]
LIBRARIES = {"floor": ["transformers", "selalign.data"], "selalign_dpo": _SELALIGN, "selective_live": _SELALIGN,
             "selective_cached": _SELALIGN, "trl_dpo": ["datasets", "transformers", "trl"]}
PAD_ID = 0
CLOCK = "wall"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="preference pairs per step (2x rows)")
    parser.add_argument("--length", type=int, default=128, help="tokens per row, prompt + response")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--tied-embeddings", action="store_true", help="output layer shares the input embedding (SmolLM2)")
    parser.add_argument("--ratio", type=float, default=0.4, help="Selective-DPO's share of kept tokens")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, round-robin")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="cpu: the process's CPU time, steadier than wall time on a shared machine (use with --threads 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and compute (bfloat16: pure bf16 training)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    parser.add_argument("--sync-check", action="store_true", help="CUDA only: list host-device syncs in selalign's step, then exit")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    return parser.parse_args(argv)


# ---------------------------------------------------------------- shared set-up


def model_config(args):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=max(2048, args.length),
        tie_word_embeddings=args.tied_embeddings, pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=2, attn_implementation="sdpa",
    )


def build_model(args, seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(args.device):  # initialised where it runs: fast on GPU
        model = LlamaForCausalLM(model_config(args))
    return model.to(dtype=getattr(torch, args.dtype))


def model_mib(args) -> tuple[int, float]:
    """(parameters, MiB of weights) of the benchmark model, without allocating it."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        parameters = sum(p.numel() for p in LlamaForCausalLM(model_config(args)).parameters())
    return parameters, parameters * getattr(torch, args.dtype).itemsize / 2**20


def synthetic_pairs(args, count: int) -> list[dict]:
    """Token pairs: prompt a quarter of the length, chosen fills the rest, rejected half to all of it."""
    generator = torch.Generator().manual_seed(0)
    prompt_length = args.length // 4
    response_length = args.length - prompt_length

    def tokens(n: int) -> list[int]:
        return torch.randint(3, args.vocab, (n,), generator=generator).tolist()

    pairs = []
    for index in range(count):
        rejected_length = int(torch.randint(response_length // 2, response_length + 1, (1,), generator=generator))
        pairs.append({"index": index, "id": str(index), "prompt_ids": tokens(prompt_length),
                      "chosen_ids": tokens(response_length), "rejected_ids": tokens(rejected_length)})
    return pairs


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

    policy, reference = build_model(args, seed=0).train(), build_model(args, seed=1).eval().requires_grad_(False)
    optimizer = optimizer_factory()(policy.parameters())
    total = args.warmup + args.steps
    scheduler = scheduler_factory()(optimizer=optimizer, num_training_steps=total)
    collate = PreferenceCollator(PAD_ID)
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


def run_selalign(args, pairs: list[dict], method: str, cached: bool) -> list[float]:
    import lightning as L
    from torch.utils.data import DataLoader

    from selalign.data import PreferenceCollator
    from selalign.module import PreferenceModule
    from selalign.objectives import DPO, SelectiveDPO

    if cached:  # what ref_cache=true attaches: per-token reference log-probs of each response (values do not change the cost)
        generator = torch.Generator().manual_seed(1)
        for pair in pairs:
            pair["ref_chosen_logps"] = (-5 * torch.rand(len(pair["chosen_ids"]), generator=generator)).tolist()
            pair["ref_rejected_logps"] = (-5 * torch.rand(len(pair["rejected_ids"]), generator=generator)).tolist()

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            synchronize(args.device)
            self.start = clock()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            synchronize(args.device)
            self.times.append(clock() - self.start)

    objective = DPO(beta=0.1) if method == "dpo" else SelectiveDPO(beta=0.1, ratio=args.ratio)
    policy = build_model(args, seed=0)
    reference = None if cached else build_model(args, seed=1)
    module = PreferenceModule(policy, reference, objective, optimizer_factory(), scheduler_factory(), vocab_size=args.vocab)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
        precision="bf16-true" if args.dtype == "bfloat16" else "32-true",
        max_steps=args.warmup + args.steps, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(),
    )
    loader = DataLoader(pairs, batch_size=args.pairs, collate_fn=PreferenceCollator(PAD_ID))
    trainer.fit(module, train_dataloaders=loader)
    return timer.times[args.warmup :]


def run_trl(args, pairs: list[dict]) -> list[float]:
    import datasets
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *unused, **unused_kwargs):
            return dataset  # the pairs are token ids already

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
        max_grad_norm=1.0, beta=0.1, max_length=args.length, precompute_ref_log_probs=False,
        gradient_checkpointing=False, bf16=args.dtype == "bfloat16", fp16=False, use_cpu=args.device == "cpu",
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    timer = StepTimer()
    trainer = PretokenizedDPOTrainer(
        model=build_model(args, seed=0), ref_model=build_model(args, seed=1), args=config, train_dataset=dataset,
        processing_class=tokenizer, callbacks=[timer],
    )
    trainer.train()
    return timer.times[args.warmup :]


def run_one(args) -> dict:
    """One configuration in this process; returns its step times and peak memory."""
    global CLOCK
    CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = synthetic_pairs(args, args.pairs * (args.warmup + args.steps))
    for module in LIBRARIES[args.run]:  # imported before the baseline, so that the memory delta is the training's own
        importlib.import_module(module)
    baseline_mib = 0.0 if args.device.startswith("cuda") else resident_mib()
    runners = {
        "floor": lambda: run_floor(args, pairs),
        "selalign_dpo": lambda: run_selalign(args, pairs, "dpo", cached=False),
        "selective_live": lambda: run_selalign(args, pairs, "selective_dpo", cached=False),
        "selective_cached": lambda: run_selalign(args, pairs, "selective_dpo", cached=True),
        "trl_dpo": lambda: run_trl(args, pairs),
    }
    times = runners[args.run]()
    if args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"times": times, "peak_mib": peak_mib - baseline_mib, "tokens_per_step": real_tokens(pairs[: args.pairs])}


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
    batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in PreferenceCollator(PAD_ID)(pairs).items()}
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


def table(args, results: dict[str, dict], environment: str) -> str:
    names = {"floor": "floor (fwd+bwd, ref fwd, AdamW)", "selalign_dpo": "selalign dpo", "selective_live": "selalign selective_dpo (live ref)",
             "selective_cached": "selalign selective_dpo (cached ref)", "trl_dpo": "trl DPOTrainer"}
    parameters, weights_mib = model_mib(args)
    memory = "peak MiB" if args.device.startswith("cuda") else "peak+ MiB"
    lines = [
        environment,
        f"model: Llama, {parameters / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), {args.dtype} on {args.device}",
        f"batch: {args.pairs} pairs x {args.length} tokens; best of {args.repeats} runs x {args.steps} timed steps, {args.clock} clock",
        "",
        f"{'configuration':38s} {'step s':>8s} {'median s':>9s} {'pairs/s':>8s} {'tokens/s':>9s} {memory:>10s}",
    ]
    for config, r in results.items():
        best = min(r["times"])
        lines.append(f"{names[config]:38s} {best:8.3f} {statistics.median(r['times']):9.3f} {args.pairs / best:8.2f} "
                     f"{r['tokens_per_step'] / best:9.0f} {r['peak_mib']:10.0f}")
    if not args.device.startswith("cuda"):
        lines.append("(peak+: peak resident set minus the resident set after importing the configuration's libraries)")
    step = {config: min(r["times"]) for config, r in results.items()}
    ratios = [
        ("selalign dpo / trl dpo", "selalign_dpo", "trl_dpo", "<= 1.00"),
        ("selalign dpo / floor", "selalign_dpo", "floor", "<= 1.15"),
        ("selective live / selalign dpo", "selective_live", "selalign_dpo", "<= 1.10"),
        ("selective cached / selective live", "selective_cached", "selective_live", "<= 0.80"),
    ]
    lines += ["", f"{'ratio (best step times)':38s} {'value':>8s}  target"]
    for label, a, b, target in ratios:
        if a in step and b in step:
            lines.append(f"{label:38s} {step[a] / step[b]:8.3f}  {target}")
    if "selective_cached" in results and "selective_live" in results:
        saved = results["selective_live"]["peak_mib"] - results["selective_cached"]["peak_mib"]
        lines.append(f"{'memory saved by the cache (MiB)':38s} {saved:8.0f}  ~ reference weights, {weights_mib:.0f} MiB")
    return "\n".join(lines)


def environment_line(args) -> str:
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        with open("/proc/cpuinfo") as f:
            device = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    versions = f"torch {torch.__version__}"
    if trl_importable():
        import trl

        versions += f", trl {trl.__version__}"
    return f"{device}, {args.threads or torch.get_num_threads()} threads, {versions}"


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
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configurations {sorted(unknown)}; choose from {CONFIGS}")
    if "trl_dpo" in configs and not trl_importable():
        print("trl is not importable: skipping trl_dpo", file=sys.stderr)
        configs.remove("trl_dpo")
    results: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for config in configs:
            outcome = run_in_subprocess(config, argv)
            if outcome is None:
                continue
            print(f"  run {repeat + 1}/{args.repeats} {config}: best step {min(outcome['times']):.3f} s, peak {outcome['peak_mib']:.0f} MiB", file=sys.stderr)
            if config in results:  # keep the fastest step times and the lowest peak (other processes share the machine)
                outcome["peak_mib"] = min(outcome["peak_mib"], results[config]["peak_mib"])
                if min(outcome["times"]) > min(results[config]["times"]):
                    outcome["times"] = results[config]["times"]
            results[config] = outcome
    report = table(args, {c: results[c] for c in configs if c in results}, environment_line(args))
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
