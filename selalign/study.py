"""What the study scripts (``scripts/world_study.py``, ``scripts/sentiment_study.py``) share: jobs run into folders,
read back, and compared.

A job is one command (a ``python -m selalign.train`` run, an evaluation) into ``<phase dir>/<job name>/``; a job whose
folder holds ``metrics.json`` is finished and skipped, so a study resumes where it stopped. Contrasts are paired by
seed and prompt: ``paired`` reads each run's ``gold_scores.jsonl`` and returns the crossed-bootstrap interval of the
mean per-prompt difference (``selalign.report.bootstrap_means``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selalign.report import bootstrap_means, bootstrap_p_value, percentile_interval

# One torch thread per job: jobs run side by side on the machine's cores.
JOB_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


@dataclass
class Job:
    name: str
    overrides: list[str]
    tuned: tuple[str, ...] = ()  # a tuning cell's values, as overrides
    entry: str = "selalign.train"  # the module the job runs: selalign.train, or selalign.evaluate for a model not trained


def read_metrics(job_dir: Path) -> dict | None:
    path = job_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_jobs(phase_dir: Path, jobs: Sequence[Job], parallel: int, common: Callable[[Job], list[str]], report_args: Sequence[str] = ()) -> None:
    """Run the unfinished ``jobs`` ``parallel`` at a time (``python -m <job.entry> <common(job)> <job.overrides>``), each
    into ``<phase_dir>/<job.name>/`` with its command and log; append the wall time to ``wall_time.txt``; write the
    phase's report (``python -m selalign.report``). Raises SystemExit naming the failed jobs."""
    phase_dir.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if read_metrics(phase_dir / job.name) is None]
    print(f"{phase_dir}: {len(jobs) - len(todo)} of {len(jobs)} jobs finished, {len(todo)} to run, {parallel} at a time", flush=True)
    env = {**os.environ, **JOB_ENV}

    def run(job: Job) -> tuple[str, int, float]:
        job_dir = phase_dir / job.name
        job_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", job.entry, *common(job), *job.overrides, f"hydra.run.dir={job_dir}"]
        (job_dir / "command.txt").write_text(" ".join(command[1:]) + "\n")
        started = time.perf_counter()
        with open(job_dir / "log.txt", "w") as log:
            code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        print(f"  {job.name}: {'ok' if code == 0 else f'FAILED ({code}), see ' + str(job_dir / 'log.txt')} in {seconds:.0f} s", flush=True)
        return job.name, code, seconds

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(run, todo))
    with open(phase_dir / "wall_time.txt", "a") as out:
        out.write(f"{len(todo)} jobs, {parallel} at a time: {time.perf_counter() - started:.0f} s wall, "
                  f"{sum(s for _, _, s in results):.0f} s summed over jobs; load {os.getloadavg()[0]:.2f}\n")
    subprocess.run([sys.executable, "-m", "selalign.report", str(phase_dir), *report_args], env={**os.environ, "OMP_NUM_THREADS": "1"})
    failed = [name for name, code, _ in results if code]
    if failed:
        raise SystemExit(f"failed jobs: {failed}")


def scores(job_dir: Path) -> dict[str, dict]:
    """A run's per-prompt gold scores (``gold_scores.jsonl``) by prompt id."""
    rows = [json.loads(line) for line in (job_dir / "gold_scores.jsonl").read_text().splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def curve(job_dir: Path) -> list[dict]:
    """A run's learning curve (``curve.jsonl``), empty when it has none."""
    path = job_dir / "curve.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def paired(phase_dir: Path, arm: str, other: str, seeds: Sequence[int], column: str, other_dir: Path | None = None) -> dict:
    """arm - other on a per-prompt score column, paired by seed and prompt (runs ``<arm>-s<seed>``, the other's in
    ``other_dir`` when it is another phase): mean, crossed-bootstrap 95% interval, two-sided p, per-seed means."""
    rows = []
    for seed in seeds:
        a, b = scores(phase_dir / f"{arm}-s{seed}"), scores((other_dir or phase_dir) / f"{other}-s{seed}")
        prompts = [p for p in a if a[p].get(column) is not None and b.get(p, {}).get(column) is not None]
        rows.append([a[p][column] - b[p][column] for p in prompts])
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{arm} - {other}: seeds scored different prompts")
    d = np.array(rows)
    replicates = bootstrap_means(d)
    p, side = bootstrap_p_value(replicates)
    return {"contrast": f"{arm} - {other}", "metric": column, "difference": float(d.mean()), "interval": percentile_interval(replicates),
            "p": p, "side": side, "per_seed": [float(x) for x in d.mean(axis=1)], "prompts": d.shape[1]}


def seed_bootstrap(values: Sequence[float], rounds: int = 10_000) -> tuple[float, tuple[float, float]]:
    """Mean of per-seed values and its 95% percentile interval over seeds resampled with replacement."""
    v = np.asarray(values, float)
    rng = np.random.default_rng(0)
    means = v[rng.integers(0, len(v), size=(rounds, len(v)))].mean(axis=1)
    return float(v.mean()), percentile_interval(means)


def interval_text(contrast: dict, scale: float = 100, unit: str = " pts", digits: int = 1) -> str:
    low, high = contrast["interval"]
    return f"{scale * contrast['difference']:+.{digits}f}{unit} [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"
