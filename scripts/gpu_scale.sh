#!/usr/bin/env bash
# Do FSDP and DeepSpeed ZeRO-3 train on GPUs? scripts/scale_check.py on every visible GPU: a few steps of
# Selective-DPO with a live reference under trainer=fsdp and trainer=deepspeed_zero3 against one device on the same
# global batch (losses, final weights, checkpoints, the full policy saved through each engine's path). A few minutes.
# The report goes to $OUT/scale_check.txt, the runs' logs to $OUT/runs/.
#
#   bash scripts/gpu_scale.sh wheels     # here, with PyPI: DeepSpeed (built without its ops) and its dependencies, into .whl/
#   bash scripts/gpu_scale.sh [ARGS]     # there, from the repository root; ARGS go to scripts/scale_check.py
#
# With one GPU the sharded runs have one process each: the engines' code paths run (sharding, gathering, saving), the
# split of the batch does not. On a CPU the same check runs FSDP on two gloo processes (DeepSpeed needs CUDA):
#   python scripts/scale_check.py --out /tmp/scale --accelerator cpu --engines single,fsdp --devices 2
set -euo pipefail

if [[ "${1:-}" == wheels ]]; then
    mkdir -p .whl
    # DeepSpeed is published as source only; its CUDA ops are compiled on first use and none is used here.
    DS_BUILD_OPS=0 python -m pip wheel --quiet --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
        hjson==3.1.0 py-cpuinfo==9.0.0 einops==0.8.1 msgpack==1.1.1 ninja==1.13.0 pydantic==2.14.4 pydantic-core==2.50.5 \
        annotated-types==0.7.0 typing-inspection==0.4.5
    ls -l .whl
    exit 0
fi

OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
mkdir -p "$OUT"
timeout 1500 "$PYTHON" scripts/scale_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_scale.log"
