#!/usr/bin/env bash
# Step time and memory on one GPU: selalign DPO, Selective-DPO (live and cached reference), TRL's DPOTrainer (if
# importable) and the floor, on a SmolLM2-135M-sized Llama (hidden 576, 30 layers, 9 heads, 3 kv heads, vocab
# 49152, tied embeddings) built from its config in bf16, 8 pairs x 512 tokens. Runs in about 4 minutes.
#
#   bash scripts/gpu_bench.sh wheels     # here, with PyPI: wheels of what the GPU image lacks, into .whl/
#   bash scripts/gpu_bench.sh [ARGS]     # there, from the repository root: table to $OUT/gpu_bench.txt
#
# The GPU machine has no network: it uses the repository, the python3 that holds torch, and the wheels in .whl/
# when they came along (carry .whl). ARGS go to scripts/bench_step.py after the defaults and override them, e.g.
# a smoke test of this script on CPU:
#   OUT=/tmp/gpu_bench bash scripts/gpu_bench.sh --device cpu --dtype float32 --pairs 2 --length 32 --hidden 64 \
#       --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 512 --steps 2
set -euo pipefail

if [[ "${1:-}" == wheels ]]; then
    # Packages selalign and trl import that the GPU image (Python 3.12) lacks; pure-Python wheels.
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 omegaconf==2.3.1 trl==1.16.0
    python -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as source only
    ls -l .whl
    exit 0
fi

OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

SMOLLM2_135M=(--hidden 576 --layers 30 --heads 9 --kv-heads 3 --intermediate 1536 --vocab 49152 --tied-embeddings)
ARGS=(--device cuda --dtype bfloat16 --pairs 8 --length 512 "${SMOLLM2_135M[@]}" --warmup 3 --steps 15 --repeats 1 "$@")

{
    "$PYTHON" - <<'EOF'
import platform, torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__}, {device}")
for name in ("transformers", "lightning", "datasets", "trl", "selalign.module", "selalign.data"):
    try:
        module = __import__(name, fromlist=["_"])
        print(f"{name} {getattr(module, '__version__', 'imports')}")
    except Exception as error:
        print(f"{name}: not importable ({type(error).__name__}: {error})")
EOF
    timeout 90 "$PYTHON" scripts/bench_step.py "${ARGS[@]}" --sync-check || echo "sync check failed or timed out"
    timeout 300 "$PYTHON" scripts/bench_step.py "${ARGS[@]}" --output "$OUT/gpu_bench.txt"
} 2>&1 | tee "$OUT/gpu_bench.log"
