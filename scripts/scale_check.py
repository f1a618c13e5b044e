"""Do the sharded engines train? A few steps of Selective-DPO (live reference) with trainer=fsdp and
trainer=deepspeed_zero3 against one device on the same global batch: losses, final policy weights, the saved policy.

    python scripts/scale_check.py --out results/scale [--engines single,fsdp,deepspeed_zero3] [--devices 2] [--steps 4]
    python scripts/scale_check.py --out /tmp/scale --accelerator cpu --engines single,fsdp --devices 2   # gloo, on a CPU

Builds a small Llama policy and reference (random weights, hidden 256, 4 layers, a BPE tokenizer trained on the
synthetic pairs) and 64 + 16 pairs, then runs ``python -m selalign.train`` once per engine, in float32, with plain SGD
(equal weights after a step mean equal averaged gradients): the single-device run takes ``devices x 2`` pairs per step,
each of the ``devices`` processes of a sharded run 2. Every run checkpoints after its last step and saves ``policy/``;
the sharded runs' policies are gathered from their shards (FSDP2) or partitions (ZeRO-3). Prints, per engine, the
logged losses, the validation loss, the largest weight difference from the single-device run and whether its policy
folder loads with ``from_pretrained``; exits non-zero when an engine fails or differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ENGINES = {
    "single": [],
    "fsdp": ["trainer=fsdp", "trainer.strategy.param_dtype=null", "trainer.strategy.reduce_dtype=null"],
    "deepspeed_zero3": ["trainer=deepspeed_zero3"],
}
WORDS = "the a cat dog fox owl red blue green is was not very quite answer question because therefore number".split()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the models, data, runs and the report")
    parser.add_argument("--engines", default="single,fsdp,deepspeed_zero3", help=f"comma-separated subset of {list(ENGINES)}")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--devices", type=int, default=None, help="processes of the sharded runs (default: every visible GPU, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest weight difference from the single-device run")
    return parser.parse_args(argv)


def build_assets(out: Path) -> tuple[Path, Path, Path, Path]:
    """A tokenizer, policy and reference saved as Hugging Face folders, and train / validation files."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    generator = random.Random(0)
    rows = []
    for i in range(80):
        prompt = " ".join(generator.choice(WORDS) for _ in range(generator.randint(3, 20))) + "?"
        rows.append({"id": f"pair-{i}", "prompt": prompt,
                     "chosen": " ".join(generator.choice(WORDS) for _ in range(generator.randint(2, 30))) + ".",
                     "rejected": " ".join(generator.choice(WORDS) for _ in range(generator.randint(2, 30))) + "."})
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:64]))
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[64:]))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<bos>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([f"User: {r['prompt']} Assistant: {r['chosen']} {r['rejected']}" for r in rows], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    folders = []
    for name, seed in (("policy", 0), ("reference", 1)):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                                             num_key_value_heads=2, max_position_embeddings=512, pad_token_id=fast.pad_token_id,
                                             bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id))
        model.save_pretrained(out / "models" / name)
        fast.save_pretrained(out / "models" / name)
        folders.append(out / "models" / name)
    return folders[0], folders[1], data / "train.jsonl", data / "validation.jsonl"


def run(engine: str, args, policy: Path, reference: Path, train: Path, validation: Path, devices: int) -> dict:
    run_dir = Path(args.out) / "runs" / engine
    sharded = engine != "single"
    overrides = [
        "model=hub", f"model.name_or_path={policy}", "ref_model=hub", f"ref_model.name_or_path={reference}", "data=files",
        f"data.path={train}", f"data.validation_path={validation}", f"data.batch_size={2 if sharded else 2 * devices}", "data.eval_batch_size=4",
        "method=selective_dpo", "benchmark=none", "logger=csv", "callbacks.progress_bar=null", "callbacks.selection_pictures=null",
        f"trainer.max_steps={args.steps}", f"checkpoint.every_n_steps={args.steps}", "trainer.max_epochs=-1", "trainer.precision=32-true",
        f"trainer.accelerator={args.accelerator}", f"trainer.devices={devices if sharded else 1}", "optimizer._target_=torch.optim.SGD",
        "optimizer.lr=0.5", f"paths.root_dir={Path(args.out) / 'runs'}", f"hydra.run.dir={run_dir}", *ENGINES[engine],
    ]
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env |= {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "NVIDIA_TF32_OVERRIDE": "0"}
    result = subprocess.run([sys.executable, "-m", "selalign.train", *overrides], env=env, capture_output=True, text=True, timeout=1800)
    (run_dir.parent / f"{engine}.log").write_text(result.stdout + result.stderr)
    outcome = {"engine": engine, "ok": result.returncode == 0, "dir": run_dir}
    if not outcome["ok"]:
        outcome["error"] = result.stderr[-2000:]
        return outcome
    rows = list(csv.DictReader(open(next(run_dir.rglob("metrics.csv")))))
    outcome["losses"] = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    outcome["val_loss"] = json.loads((run_dir / "metrics.json").read_text())["val/loss"]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    outcome["checkpoint"] = "folder" if checkpoint.is_dir() else "file" if checkpoint.is_file() else "missing"
    return outcome


def compare(outcomes: list[dict], tolerance: float) -> tuple[str, bool]:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    single = next((o for o in outcomes if o["engine"] == "single" and o["ok"]), None)
    expected = load_file(single["dir"] / "policy" / "model.safetensors") if single else None
    lines, passed = [f"{'engine':16s} {'steps':>5s} {'logged losses':40s} {'val/loss':>9s} {'max |dw|':>10s} {'checkpoint':>10s}  policy/ loads"], True
    for outcome in outcomes:
        if not outcome["ok"]:
            lines.append(f"{outcome['engine']:16s} FAILED (see runs/{outcome['engine']}.log):\n{outcome['error']}")
            passed = False
            continue
        weights = load_file(outcome["dir"] / "policy" / "model.safetensors")
        difference = max((weights[k] - expected[k]).abs().max().item() for k in expected) if expected else float("nan")
        try:
            AutoModelForCausalLM.from_pretrained(outcome["dir"] / "policy")
            loads = "yes"
        except Exception as error:  # reported, not raised: the table shows every engine
            loads, passed = f"no ({type(error).__name__})", False
        passed &= not difference > tolerance
        losses = " ".join(f"{loss:.4f}" for loss in outcome["losses"])
        lines.append(f"{outcome['engine']:16s} {len(outcome['losses']):5d} {losses:40s} {outcome['val_loss']:9.5f} {difference:10.2e} {outcome['checkpoint']:>10s}  {loads}")
    return "\n".join(lines), passed


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; choose from {list(ENGINES)}")
    devices = args.devices or (torch.cuda.device_count() if args.accelerator == "gpu" else 2)
    out = Path(args.out)
    policy, reference, train, validation = build_assets(out)
    outcomes = [run(engine, args, policy, reference, train, validation, devices) for engine in engines]
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" and torch.cuda.is_available() else "CPU"
    versions = f"torch {torch.__version__}"
    for name in ("lightning", "transformers", "deepspeed"):
        try:
            versions += f", {name} {__import__(name).__version__}"
        except ImportError:
            versions += f", {name} not installed"
    table, passed = compare(outcomes, args.tolerance)
    report = (f"{device} x {devices} processes for the sharded runs; {versions}\n"
              f"Selective-DPO, live reference, {args.steps} SGD steps of {2 * devices} pairs, float32; max |dw|: largest difference of a "
              f"policy weight from the single-device run (tolerance {args.tolerance:g})\n\n{table}\n\n{'PASSED' if passed else 'FAILED'}")
    print(report)
    (out / "scale_check.txt").write_text(report + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
