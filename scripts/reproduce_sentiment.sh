#!/usr/bin/env bash
# SmolLM2-135M-Instruct, sentiment-controlled generation (experiment=smollm2_sentiment), offline on a CPU:
#   start           the starting model, no training (one run: greedy answers do not depend on the seed)
#   dpo             DPO against the starting weights (ref_model=policy_init)
#   selective_dpo   Selective-DPO at ratio 0.4 against the DPO-tuned copy (ref_model=smollm2_135m_dpo), as in the paper
# three seeds each, into one sweep dir; each sweep ends by rewriting its report over every run there (gold win rate and
# mean reward under the MiniLM classifier, the evaluation judge; train seconds): <sweep dir>/report.md. The wall time
# of the three sweeps goes to wall_time.txt.
#
#   scripts/reproduce_sentiment.sh                                        # everything (55 min on 2 cores, builds included)
#   SEEDS=0 scripts/reproduce_sentiment.sh data.num_train_prompts=64 benchmark.n_prompts=48   # a reduced check
#
# Env: SEEDS (default 0,1,2), JOBS (parallel jobs, default 2), OUTPUT_DIR (default outputs/reproduce_sentiment),
# OMP_NUM_THREADS (default 1: one thread per job; on cores shared with other work more threads run slower).
# The first job builds what every run shares, into paths.cache_dir: the converted model, the classifier, the pairs,
# the DPO reference (jobs that need one wait for it). Arguments are Hydra overrides applied to every run.
set -uo pipefail
cd "$(dirname "$0")/.."

export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
sweep_dir="${OUTPUT_DIR:-outputs/reproduce_sentiment}/$(date +%Y-%m-%d_%H-%M-%S)"
seeds="${SEEDS:-0,1,2}"
status=0
started=$SECONDS

sweep() {  # sweep <name> <overrides...>: one multirun whose jobs go to <sweep dir>/<name>-<seed>
  local name=$1
  shift
  python -m selalign.train -m experiment=smollm2_sentiment hydra/launcher=joblib "hydra.launcher.n_jobs=${JOBS:-2}" \
    "hydra.sweep.dir=$sweep_dir" "hydra.sweep.subdir=$name-\${seed}" "$@" || status=1
}

sweep start method=start ref_model=policy_init ref_cache=false seed=0 "$@"
sweep dpo method=dpo ref_model=policy_init "seed=$seeds" "$@"
sweep selective_dpo method=selective_dpo method.ratio=0.4 ref_model=smollm2_135m_dpo "seed=$seeds" "$@"

echo "wall time: $((SECONDS - started)) s (3 sweeps, ${JOBS:-2} jobs at a time, OMP_NUM_THREADS=$OMP_NUM_THREADS)" | tee "$sweep_dir/wall_time.txt"
if ls "$sweep_dir"/*/error.txt >/dev/null 2>&1; then status=1; fi  # failed jobs, listed in the report
echo "report: $sweep_dir/report.md"
exit "$status"
