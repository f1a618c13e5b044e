#!/usr/bin/env bash
# The offline world's results: experiment=method_comparison and experiment=reference_ablation, three seeds each,
# two jobs at a time (2 CPU cores); each sweep ends by writing its report (report.md, report.png).
#
#   scripts/reproduce_world.sh                               # everything
#   scripts/reproduce_world.sh seed=0 trainer.max_steps=2    # a quick check: overrides narrow both sweeps
#
# Sweeps go to $OUTPUT_DIR/<experiment>/<time> (default OUTPUT_DIR=outputs/reproduce_world); the wandb group of each
# is <experiment>-<time>. Env: JOBS (parallel jobs, default 2), OMP_NUM_THREADS (default 1: one thread per job),
# WANDB_MODE (default offline).
# A failed job leaves error.txt in its dir and is listed in the report; the script then exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."

export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
output_dir="${OUTPUT_DIR:-outputs/reproduce_world}"
stamp="$(date +%Y-%m-%d_%H-%M-%S)"
status=0
started=$SECONDS
for experiment in method_comparison reference_ablation; do
  sweep_dir="$output_dir/$experiment/$stamp"
  python -m selalign.train -m "experiment=$experiment" hydra/launcher=joblib "hydra.launcher.n_jobs=${JOBS:-2}" \
    "hydra.sweep.dir=$sweep_dir" "$@" || status=1
  if ls "$sweep_dir"/*/error.txt >/dev/null 2>&1; then status=1; fi
done
echo "wall time: $((SECONDS - started)) s (2 sweeps, ${JOBS:-2} jobs at a time, OMP_NUM_THREADS=$OMP_NUM_THREADS)" | tee "$output_dir/wall_time-$stamp.txt"
echo "reports: $output_dir/*/$stamp/report.md"
echo "upload the offline wandb runs with: wandb sync $output_dir/*/$stamp/*/wandb/offline-run-*"
exit "$status"
