#!/usr/bin/env bash
# Every speed and memory target of docs/performance.md on one GPU, in about 10 minutes, with tables and ratios to
# $OUT/gpu_bench.txt (and the full log to $OUT/gpu_bench.log):
#
#   smollm2    SmolLM2-135M shape, bf16, 8 pairs x 512 tokens: floor, selalign (packed + fused, and full logits),
#              Selective-DPO live and cached, TRL         -> peak memory vs TRL <= 0.85, step time vs TRL <= 1
#   qwen05     Qwen2.5-0.5B shape (vocab 151,936), 8 pairs x 1024 tokens: selalign (fused, full logits), TRL
#                                                         -> peak memory vs TRL <= 0.6, step time vs TRL <= 1
#   uf         SmolLM2 shape, UltraFeedback-like lengths, 8 pairs: selalign, TRL on random and on length-grouped
#              batches                                    -> real tokens/s vs TRL >= 1.5
#   ref8       SmolLM2 policy, reference 7.9x its size: Selective-DPO live and cached -> cached / live <= 0.35
#   lora       SmolLM2 with LoRA (r 16): reference = a second model, or the policy with adapters off
#                                                         -> step time within 3%, memory saved = the base weights
#   cache      reference cache build on the GPU (bf16) against the CPU (float32, all cores) -> >= 20x
#   sync       host-device syncs in selalign's step
#
#   bash scripts/gpu_bench.sh wheels         # here, with PyPI: wheels of what the GPU image lacks, into .whl/
#   bash scripts/gpu_bench.sh [SECTIONS]     # there, from the repository root; SECTIONS default: all of the above
#
# The GPU machine has no network: it uses the repository, the python3 that holds torch, and the wheels in .whl/
# when they came along. A smoke test of this script on CPU (tiny shapes, a few seconds per configuration):
#   OUT=/tmp/gpu_bench SMOKE=1 bash scripts/gpu_bench.sh
set -euo pipefail

if [[ "${1:-}" == wheels ]]; then
    # Pure-Python packages selalign, trl and the benchmarks import that the GPU image (Python 3.12, with torch and
    # transformers) may lack, at the versions the CPU suite runs.
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 omegaconf==2.3.1 trl==1.16.0 peft==0.21.2 accelerate==1.15.0 \
        rich==15.0.0 markdown-it-py mdurl pygments hydra-core==1.3.2 torchdata==0.11.0
    python -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as source only
    ls -l .whl
    exit 0
fi

OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
SECTIONS=${*:-smollm2 qwen05 uf ref8 lora cache sync}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1

if [[ -n "${SMOKE:-}" ]]; then  # the same runs at tiny shapes on the CPU: checks the script, measures nothing
    DEVICE=(--device cpu --dtype float32 --warmup 1 --steps 1 --repeats 1 --threads 1)
    SMOLLM2=(--shape custom --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 512 --tied-embeddings)
    QWEN05=(--shape custom --family qwen2 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 1024 --tied-embeddings)
    LONG=64 SHORT=32 PAIRS=2 CACHE_PAIRS=8
else
    DEVICE=(--device cuda --dtype bfloat16 --warmup 3 --steps 10 --repeats 1)
    SMOLLM2=(--shape smollm2) QWEN05=(--shape qwen05)
    LONG=1024 SHORT=512 PAIRS=8 CACHE_PAIRS=256
fi
BENCH=("$PYTHON" scripts/bench_step.py "${DEVICE[@]}" --pairs "$PAIRS")

section() {  # name, then the benchmark's arguments: its table goes to $OUT/gpu_bench.txt
    local name=$1
    shift
    [[ " $SECTIONS " == *" $name "* ]] || return 0
    echo "== $name: ${*}" | tee -a "$OUT/gpu_bench.txt"
    timeout 300 "${BENCH[@]}" "$@" --output "$OUT/$name.txt" || echo "$name failed or timed out"
    cat "$OUT/$name.txt" >> "$OUT/gpu_bench.txt" 2>/dev/null || true
    echo >> "$OUT/gpu_bench.txt"
}

{
    "$PYTHON" - <<'EOF'
import platform, torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__}, {device}")
for name in ("transformers", "lightning", "datasets", "peft", "trl", "selalign.module", "selalign.data"):
    try:
        module = __import__(name, fromlist=["_"])
        print(f"{name} {getattr(module, '__version__', 'imports')}")
    except Exception as error:
        print(f"{name}: not importable ({type(error).__name__}: {error})")
EOF
    : > "$OUT/gpu_bench.txt"
    section smollm2 "${SMOLLM2[@]}" --length "$SHORT" --configs floor,selalign_dpo,selalign_dpo_logits,selective_live,selective_cached,trl_dpo
    section qwen05 "${QWEN05[@]}" --length "$LONG" --configs selalign_dpo,selalign_dpo_logits,trl_dpo
    section uf "${SMOLLM2[@]}" --lengths ultrafeedback --configs selalign_dpo,trl_dpo,trl_dpo_grouped
    section ref8 "${SMOLLM2[@]}" --length "$SHORT" --ref-scale 8 --configs selective_live,selective_cached
    section lora "${SMOLLM2[@]}" --length "$SHORT" --configs lora_two_models,lora_adapter_ref
    section cache "${SMOLLM2[@]}" --lengths ultrafeedback --cache-bench --cache-pairs "$CACHE_PAIRS"
    if [[ " $SECTIONS " == *" sync "* ]]; then
        timeout 120 "${BENCH[@]}" "${SMOLLM2[@]}" --length "$SHORT" --sync-check | tee -a "$OUT/gpu_bench.txt" || echo "sync check failed or timed out"
    fi
} 2>&1 | tee "$OUT/gpu_bench.log"
