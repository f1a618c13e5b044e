"""A sweep's results in one place: `python -m selalign.report <multirun dir>`.

Reads every job dir of the sweep (``<dir>/<job>/`` holding ``.hydra/``, ``config.yaml``, ``metrics.json`` or ``error.txt``,
and where the run wrote them ``gold_scores.jsonl`` and ``curve.jsonl``) and writes into the sweep dir:

- ``report.md``: mean ± std over seeds per (method, ratio, reference); every arm's paired difference from the
  baseline arm (``report.baseline``) on every per-prompt gold value, with a 95% bootstrap interval over seeds and
  prompts, and Holm-corrected verdicts for the primary contrasts (``report.primary``); the steps and wall-clock
  seconds each arm needs to reach the baseline's final score (from the learning curves); one row per run; the
  failed runs. How to read its statistics: ``docs/statistics.md``.
- ``report.png``: gold win rate and selection precision against the selection ratio.
- ``report_forest.png``: each contrast's difference from the baseline with its interval, zero marked.
- ``report_frontier.png``: gold mean reward against KL to the start, per run and along the learning curves.

and prints the summary. An arm is a run's label (``selalign.loggers.run_name``) without its seed. Works on partial
sweeps: a missing metric is a blank cell, a job without ``metrics.json`` is failed (with ``error.txt``) or unfinished.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback
from matplotlib import colormaps
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from selalign.loggers import method_label, reference_label, run_name, selection_ratio, selector_label

JOB_MARKERS = (".hydra", "config.yaml", "metrics.json", "error.txt")  # any of them makes a child dir a job
SCORES_FILE, CURVE_FILE = "gold_scores.jsonl", "curve.jsonl"
RUN_METRICS = ("gold/win_rate", "gold/mean_reward", "gold/accuracy", "val/rewards/accuracies", "val/selection/precision", "val/selection/recall", "time/train_seconds")
SUMMARY_METRICS = {
    "gold/win_rate": "gold win rate", "gold/mean_reward": "gold mean reward", "gold/accuracy": "gold accuracy",
    "val/selection/precision": "selection precision", "time/train_seconds": "train seconds",
}
PLOTTED_METRICS = {"gold/win_rate": "gold win rate", "val/selection/precision": "selection precision (val)"}

CLAIMS = (
    "selective alignment reduces computational overhead",
    "stronger reference models improve token-selection accuracy",
    "Selective-DPO outperforms standard DPO and distillation baselines",
)
PRIMARY_METRICS = ("gold/mean_reward", "gold/accuracy")  # the metrics of the Holm-corrected verdicts and the forest plot
BOOTSTRAP_ROUNDS = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
LEVEL = 0.95
FEW_SEEDS = 5  # below this many seeds the report warns that resampling seeds understates their spread
# Per-prompt columns of gold_scores.jsonl and their metric names; every other score column b is gold/<b>.
SCORE_COLUMN_METRICS = {"reward": "gold/mean_reward", "win": "gold/win_rate"}
UNPAIRED_SCORE_COLUMNS = ("win", "kl_to_start")  # score columns without a start_ version
# A metric's direction is that of the first of its '/'-separated parts found here.
HIGHER_IS_BETTER = {"mean_reward", "reward", "win_rate", "accuracy", "labeler", "auroc", "precision", "recall"}
LOWER_IS_BETTER = {"wrong", "kl_to_start", "repetitive", "missing_end"}
REACH_METRICS = ("gold/mean_reward", "gold/accuracy", "probe/accuracy")  # the curve scores whose baseline value arms race to
DIRECTION_WORDS = {1: "higher is better", -1: "lower is better", 0: "neither direction is better"}


def metric_direction(metric: str) -> int:
    """+1 where higher is better (reward, win rate, accuracy), -1 where lower is (wrong answers, KL to the start), 0 else."""
    for part in metric.split("/"):
        if part in HIGHER_IS_BETTER:
            return 1
        if part in LOWER_IS_BETTER:
            return -1
    return 0


class ComparisonError(ValueError):
    """The report's comparison cannot be made as configured: ``report.baseline`` or ``report.primary`` names no
    single arm, the jobs disagree on them, an arm has two finished runs of one seed, or a run's file is unreadable."""


@dataclass
class Run:
    """One job of a sweep. ``method``, ``ratio`` (token-selective methods only), ``reference`` and ``seed`` come
    from its config and Hydra choices (None where the job left no config); ``error``: the last line of ``error.txt``.
    ``label``: its name without the seed; ``arm``: the label, followed by ``-<key>=<value>`` for each override that
    differs between runs of the same label and seed (a swept beta, say). ``baseline``, ``primary``: its ``report``
    node. ``overrides``: Hydra's overrides of the job (``.hydra/overrides.yaml``) as key -> value."""

    job: str
    name: str
    job_dir: Path | None = None
    method: str | None = None
    ratio: float | None = None
    reference: str | None = None
    selector: str | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    finished: bool = False
    label: str | None = None
    arm: str | None = None
    beta: float | None = None
    baseline: str | None = None
    primary: tuple[str, ...] = ()
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if self.finished else "failed" if self.error is not None else "unfinished"

    @property
    def group(self) -> tuple[str | None, float | None, str | None, str | None]:
        return self.method, self.ratio, self.reference, self.selector


@dataclass
class Summary:
    """The finished runs of one (method, ratio, reference, selector): per metric, the values over seeds."""

    method: str | None
    ratio: float | None
    reference: str | None
    selector: str | None
    values: dict[str, list[float]]
    runs: int


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job dirs (children holding one of ``JOB_MARKERS``), in job-number order."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and any((d / name).exists() for name in JOB_MARKERS)]
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def job_config(job_dir: Path) -> tuple[DictConfig | None, dict[str, str]]:
    """(the resolved ``config.yaml``, else Hydra's own ``.hydra/config.yaml``, else None; the Hydra choices or {})."""
    hydra_dir = job_dir / ".hydra"
    config_file = next((f for f in (job_dir / "config.yaml", hydra_dir / "config.yaml") if f.exists()), None)
    choices = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices if (hydra_dir / "hydra.yaml").exists() else {}
    return (OmegaConf.load(config_file) if config_file else None), dict(choices)


def job_overrides(job_dir: Path) -> dict[str, str]:
    """Hydra's overrides of the job (``.hydra/overrides.yaml``: ``key=value`` strings) as key -> value; {} without the file."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.exists():
        return {}
    pairs = (str(override).split("=", 1) for override in OmegaConf.load(overrides_file))
    return {key.lstrip("+~"): value for key, value in (pair for pair in pairs if len(pair) == 2)}


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def load_run(job_dir: Path) -> Run:
    """A job dir as a ``Run``; named as on wandb (``selalign.loggers.run_name``) when it has a config."""
    cfg, choices = job_config(job_dir)
    metrics_file, error_file = job_dir / "metrics.json", job_dir / "error.txt"
    run = Run(
        job=job_dir.name,
        name=job_dir.name,
        job_dir=job_dir,
        metrics=json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
        error=last_line(error_file.read_text()) if error_file.exists() else None,
        finished=metrics_file.exists(),
        overrides=job_overrides(job_dir),
    )
    if cfg is not None:
        run.name, run.method, run.ratio = run_name(choices, cfg), method_label(cfg), selection_ratio(cfg)
        run.reference, run.selector, run.seed = reference_label(choices, cfg), selector_label(choices, cfg), cfg.seed
        run.label = run.arm = run.name.removesuffix(f"-s{cfg.seed}")
        method = cfg.get("method") or {}  # an evaluation job has none
        run.beta = float(method.beta) if method.get("beta") is not None else None
        report = cfg.get("report") or {}
        run.baseline, run.primary = report.get("baseline"), tuple(report.get("primary") or ())
    return run


def name_arms(runs: Sequence[Run]) -> None:
    """Where runs of one label share a seed, they differ in an override the label does not show (``method.beta``,
    say): their arm becomes ``<label>-<key>=<value>`` for every such override key."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        if run.label is not None:
            by_label.setdefault(run.label, []).append(run)
    for label, members in by_label.items():
        seeds = [run.seed for run in members]
        if len(seeds) == len(set(seeds)):
            continue
        keys = sorted({key for run in members for key in run.overrides} - {"seed"})
        varying = [key for key in keys if len({run.overrides.get(key) for run in members}) > 1]
        for run in members:
            run.arm = "-".join([label, *(f"{key}={run.overrides.get(key)}" for key in varying)])


def load_runs(sweep_dir: Path) -> list[Run]:
    runs = [load_run(d) for d in job_dirs(sweep_dir)]
    name_arms(runs)
    return runs


# Statistics: the crossed bootstrap, its percentile interval and p-value, Holm's step-down, time to reach a score.

BOOTSTRAP_CHUNK = 1000  # rounds drawn and averaged at a time (bounds memory at chunk x prompts)


def bootstrap_means(differences: np.ndarray | Sequence[Sequence[float]], rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[rounds] bootstrap replicates of the mean of a [S seeds, I prompts] matrix of paired differences.

    The crossed (two-way) bootstrap: each round draws S seed rows and, independently, I prompt columns uniformly
    with replacement, and takes the mean of the S x I cells where the drawn rows and columns cross
    (a row or column drawn twice counts twice). Reproducible: numpy's ``default_rng(seed)``, rounds drawn in
    chunks of ``BOOTSTRAP_CHUNK``, seed indices before prompt indices.
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"need a [seeds, prompts] matrix with at least one of each, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("the paired differences hold NaN or infinite values")
    seeds, prompts = d.shape
    rng = np.random.default_rng(seed)
    replicates = np.empty(rounds)
    for start in range(0, rounds, BOOTSTRAP_CHUNK):
        n = min(BOOTSTRAP_CHUNK, rounds - start)
        drawn_seeds = rng.integers(0, seeds, size=(n, seeds)) + seeds * np.arange(n)[:, None]
        seed_counts = np.bincount(drawn_seeds.ravel(), minlength=n * seeds).reshape(n, seeds).astype(float)
        drawn_prompts = rng.integers(0, prompts, size=(n, prompts))
        # Per round: the drawn seeds' differences summed per prompt, then gathered over the drawn prompts.
        replicates[start : start + n] = np.take_along_axis(seed_counts @ d, drawn_prompts, axis=1).sum(axis=1) / (seeds * prompts)
    # A mean that is 0 in exact arithmetic (differences that cancel) is 0, not the rounding error of its sum.
    replicates[np.abs(replicates) <= 1e-12 * np.abs(d).max()] = 0.0
    return replicates


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval: the (1 - level)/2 and (1 + level)/2 quantiles of the replicates (numpy's default,
    linear interpolation between order statistics)."""
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_p_value(replicates: np.ndarray) -> tuple[float, int]:
    """(two-sided bootstrap p-value of "the mean difference is 0", the side the replicates lie on: +1 or -1).

    p = min(1, 2 * (1 + min(#{r <= 0}, #{r >= 0})) / (B + 1)) over the B replicates r: the smallest two-sided level
    at which the percentile interval excludes 0, counted with the usual +1 so that it is never 0.
    """
    at_most, at_least = int((replicates <= 0).sum()), int((replicates >= 0).sum())
    p = min(1.0, 2 * (1 + min(at_most, at_least)) / (len(replicates) + 1))
    return p, 1 if at_least > at_most else -1


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[tuple[float, bool]]:
    """Holm's step-down procedure over one family of m tests: (adjusted p-value, rejected at ``alpha``) per test, in
    the input's order. Sorted ascending, the k-th p-value (k = 1..m) is adjusted to max over j <= k of
    min(1, (m - j + 1) p_(j)); a test is rejected when its adjusted p-value is at most ``alpha`` (the same decisions
    as stopping at the first p_(k) > alpha / (m - k + 1))."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return [(p, p <= alpha) for p in adjusted]


def verdict(rejected: bool, side: int, direction: int) -> str:
    """``holds`` (better than the baseline after Holm), ``reversed`` (worse), ``differs`` (a metric with no better
    direction), ``not resolved`` (Holm does not reject 0)."""
    if not rejected:
        return "not resolved"
    if direction == 0:
        return "differs"
    return "holds" if side * direction > 0 else "reversed"


def time_to_reach(curve: Sequence[dict], metric: str, target: float, direction: int) -> tuple[float, float] | None:
    """(step, seconds) at which ``metric`` first reaches ``target`` along ``curve`` (rows ``{"step", "seconds",
    metric}`` in step order; rows without the metric are skipped); None when it never does.

    Reaching is ``value >= target`` (``<=`` where lower is better, ``direction`` -1). Between the last point short of
    the target and the first that reaches it, step and seconds are interpolated linearly in the metric; a curve that
    starts at or beyond the target reaches it at its first point.
    """
    sign = -1 if direction < 0 else 1
    previous = None
    for row in curve:
        value = row.get(metric)
        if value is None:
            continue
        point = (float(row["step"]), float(row["seconds"]), float(value))
        if sign * point[2] >= sign * target:
            if previous is None:
                return point[0], point[1]
            fraction = (target - previous[2]) / (point[2] - previous[2])
            return previous[0] + fraction * (point[0] - previous[0]), previous[1] + fraction * (point[1] - previous[1])
        previous = point
    return None


# What a sweep compares: the baseline arm, the primary arms, the runs of each arm by seed, their files.


@dataclass
class Comparison:
    """The baseline arm, the primary arms (compared with it under Holm) and every arm, in order of appearance."""

    baseline: str
    primary: list[str]
    arms: list[str]


def is_subsequence(parts: Sequence[str], whole: Sequence[str]) -> bool:
    remaining = iter(whole)
    return all(part in remaining for part in parts)


def match_arm(name: str, arms: Sequence[str], key: str) -> str:
    """The arm ``name`` names: itself, else the one arm whose dash-separated parts hold name's parts in order
    (``dpo`` names ``dpo-ref=world_large_dpo`` when no other arm has a part ``dpo``)."""
    name = str(name)
    if name in arms:
        return name
    matches = [arm for arm in arms if is_subsequence(name.split("-"), arm.split("-"))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ComparisonError(f"{key}={name!r} names no arm of this sweep; its arms: {', '.join(arms) or 'none'}")
    raise ComparisonError(f"{key}={name!r} matches {len(matches)} arms ({', '.join(matches)}): name one of them in full")


def comparison_of(runs: Sequence[Run], baseline: str | None = None, primary: Sequence[str] | None = None) -> Comparison | None:
    """The sweep's comparison: ``baseline`` and ``primary`` where given, else the jobs' ``report`` node (the same in
    every job); None when no baseline is set."""
    configured = list(dict.fromkeys((run.baseline, run.primary) for run in runs if run.label is not None))
    if (baseline is None or primary is None) and len(configured) > 1:
        listed = "; ".join(f"baseline={b}, primary={list(p)}" for b, p in configured)
        raise ComparisonError(f"the sweep's jobs set different report nodes ({listed}): pass --baseline and --primary to python -m selalign.report")
    configured_baseline, configured_primary = configured[0] if configured else (None, ())
    baseline = configured_baseline if baseline is None else baseline
    primary = list(configured_primary if primary is None else primary)
    arms = list(dict.fromkeys(run.arm for run in runs if run.arm is not None))
    if baseline is None:
        if primary:
            raise ComparisonError(f"report.primary={primary} is set but report.baseline is not: name the arm they are compared with")
        return None
    base = match_arm(baseline, arms, "report.baseline")
    primaries = [match_arm(name, arms, "report.primary") for name in primary]
    if base in primaries:
        raise ComparisonError(f"report.primary names the baseline arm {base} itself")
    if len(set(primaries)) < len(primaries):
        raise ComparisonError(f"report.primary names one arm twice: {primary} -> {primaries}")
    return Comparison(base, primaries, arms)


def runs_by_seed(runs: Sequence[Run], arm: str) -> dict[int, Run]:
    """The finished runs of ``arm`` by seed; two finished runs of one seed cannot be paired."""
    by_seed: dict[int, Run] = {}
    for run in runs:
        if run.arm == arm and run.status == "ok":
            if run.seed in by_seed:
                raise ComparisonError(f"arm {arm} has two finished runs of seed {run.seed} (jobs {by_seed[run.seed].job} and {run.job}): "
                                      "the report pairs one run per seed; move one of them out of the sweep dir")
            by_seed[run.seed] = run
    return by_seed


def read_rows(path: Path) -> list[dict]:
    """The JSON objects of a JSON Lines file; ComparisonError naming the file and line of one that is not."""
    rows = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ComparisonError(f"{path}, line {number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ComparisonError(f"{path}, line {number}: not a JSON object")
            rows.append(row)
    return rows


def load_scores(run: Run) -> dict[str, dict] | None:
    """The run's per-prompt gold scores (``gold_scores.jsonl``) by prompt id; None when it wrote none."""
    path = run.job_dir / SCORES_FILE
    if not path.exists():
        return None
    scores: dict[str, dict] = {}
    for number, row in enumerate(read_rows(path), 1):
        if "id" not in row:
            raise ComparisonError(f"{path}, row {number}: no prompt 'id'")
        if row["id"] in scores:
            raise ComparisonError(f"{path}: prompt id {row['id']!r} appears twice")
        scores[row["id"]] = row
    return scores


def load_curve(run: Run) -> list[dict] | None:
    """The run's learning curve (``curve.jsonl``: rows with an integer ``step``, ``seconds`` and metrics, steps
    increasing); None when it wrote none."""
    path = run.job_dir / CURVE_FILE
    if not path.exists():
        return None
    rows, previous = read_rows(path), None
    for number, row in enumerate(rows, 1):
        step, seconds = row.get("step"), row.get("seconds")
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise ComparisonError(f"{path}, row {number}: needs an integer 'step' and a number 'seconds', got {step!r} and {seconds!r}")
        if previous is not None and step <= previous:
            raise ComparisonError(f"{path}, row {number}: step {step} does not follow step {previous}")
        previous = step
    return rows


def score_columns(tables: Sequence[dict[str, dict]]) -> list[str]:
    """The per-prompt score columns of ``gold_scores.jsonl`` tables: those with a ``start_`` version (the reward and
    the scorer's breakdown), ``win`` and ``kl_to_start``; reward and win first, the rest in file order."""
    names = dict.fromkeys(name for table in tables for row in table.values() for name in row)
    columns = [name for name in names if not name.startswith("start_") and (name in UNPAIRED_SCORE_COLUMNS or f"start_{name}" in names)]
    first = [name for name in SCORE_COLUMN_METRICS if name in columns]
    return first + [name for name in columns if name not in first]


def score_metric(column: str) -> str:
    return SCORE_COLUMN_METRICS.get(column, f"gold/{column}")


# Paired differences from the baseline.


@dataclass
class Contrast:
    """arm - baseline on one per-prompt gold metric, paired by seed and prompt over ``seeds`` x ``prompts`` cells.

    ``interval``: the 95% crossed-bootstrap percentile interval of the mean difference; ``p_value``, ``side``: its
    two-sided bootstrap p-value and the side of 0 its replicates lie on; ``seed_differences``: the mean difference
    of each seed; ``left_out``: prompts scored in some but not all of the paired runs. ``holm_p`` and ``verdict``:
    for primary contrasts on a primary metric."""

    arm: str
    metric: str
    seeds: list[int]
    prompts: int
    left_out: int
    baseline_mean: float
    arm_mean: float
    difference: float
    interval: tuple[float, float]
    p_value: float
    side: int
    seed_differences: list[float]
    primary: bool = False
    holm_p: float | None = None
    verdict: str | None = None

    @property
    def direction(self) -> int:
        return metric_direction(self.metric)


def paired_contrast(arm: str, column: str, arm_scores: dict[int, dict], baseline_scores: dict[int, dict], primary: bool) -> Contrast | None:
    """``arm`` - baseline on score ``column`` over the seeds both ran and the prompts every one of those runs scored
    (a value that is None does not apply to that prompt); None when no prompt is left."""
    seeds = sorted(set(arm_scores) & set(baseline_scores))
    tables = [table for seed in seeds for table in (arm_scores[seed], baseline_scores[seed])]

    def value(table: dict[str, dict], prompt: str) -> float | None:
        row = table.get(prompt)
        return None if row is None else row.get(column)

    applicable = [prompt for prompt in dict.fromkeys(p for table in tables for p in table) if any(value(t, prompt) is not None for t in tables)]
    complete = [prompt for prompt in applicable if all(value(t, prompt) is not None for t in tables)]
    if not seeds or not complete:
        return None
    arm_values = np.array([[float(value(arm_scores[s], p)) for p in complete] for s in seeds])
    baseline_values = np.array([[float(value(baseline_scores[s], p)) for p in complete] for s in seeds])
    differences = arm_values - baseline_values
    replicates = bootstrap_means(differences)
    p_value, side = bootstrap_p_value(replicates)
    return Contrast(
        arm, score_metric(column), seeds, len(complete), len(applicable) - len(complete), float(baseline_values.mean()),
        float(arm_values.mean()), float(differences.mean()), percentile_interval(replicates), p_value, side,
        [float(x) for x in differences.mean(axis=1)], primary,
    )


@dataclass
class PairedResults:
    """Every computed contrast; ``unpaired``: arms with nothing to pair, and why; ``family``: Holm's m."""

    contrasts: list[Contrast]
    unpaired: dict[str, str]
    family: int


def paired_differences(runs: Sequence[Run], comparison: Comparison) -> PairedResults:
    """Every arm against the baseline on every per-prompt gold metric, Holm's step-down over the primary contrasts on
    the primary metrics (``PRIMARY_METRICS`` where present) at ``ALPHA``."""
    def scores(arm: str) -> dict[int, dict]:
        tables = {seed: load_scores(run) for seed, run in runs_by_seed(runs, arm).items()}
        return {seed: table for seed, table in tables.items() if table is not None}

    baseline_scores = scores(comparison.baseline)
    contrasts, unpaired = [], {}
    columns = score_columns(list(baseline_scores.values()))
    for arm in comparison.arms:
        if arm == comparison.baseline:
            continue
        arm_scores = scores(arm)
        if not baseline_scores or not arm_scores:
            whose = "the baseline has" if not baseline_scores else "it has"
            unpaired[arm] = f"{whose} no finished run with per-prompt scores ({SCORES_FILE}; benchmark=gold writes it)"
            continue
        if not set(arm_scores) & set(baseline_scores):
            unpaired[arm] = f"no seed in common with the baseline (its seeds {sorted(arm_scores)}, the baseline's {sorted(baseline_scores)})"
            continue
        arm_columns = set(score_columns(list(arm_scores.values())))
        for column in columns:
            if column in arm_columns:
                result = paired_contrast(arm, column, arm_scores, baseline_scores, arm in comparison.primary)
                if result is not None:
                    contrasts.append(result)
    family = [c for c in contrasts if c.primary and c.metric in PRIMARY_METRICS]
    for member, (adjusted, rejected) in zip(family, holm([c.p_value for c in family])):
        member.holm_p, member.verdict = adjusted, verdict(rejected, member.side, member.direction)
    return PairedResults(contrasts, unpaired, len(family))


# Steps and seconds to reach the baseline's final score.


@dataclass
class Reach:
    """How each seed of ``arm`` reaches ``target`` (the baseline's final ``metric``, mean over its seeds) along its
    learning curve: seed -> (step, seconds), None where it never does; ``last``: each curve's last (step, seconds)."""

    arm: str
    metric: str
    target: float
    per_seed: dict[int, tuple[float, float] | None]
    last: dict[int, tuple[float, float]]


def final_value(curve: Sequence[dict], metric: str) -> float | None:
    """The metric at the last row of ``curve`` that has it."""
    return next((float(row[metric]) for row in reversed(curve) if row.get(metric) is not None), None)


def reach_results(runs: Sequence[Run], comparison: Comparison, curves_by_job: dict[str, list[dict]]) -> list[Reach]:
    """For every score of ``REACH_METRICS`` that every baseline curve ends with: the target (the baseline's mean
    final value) and how each arm with that metric reaches it. ``curves_by_job``: ``curves_of(runs)``."""
    curves = {
        arm: {seed: curves_by_job[run.job] for seed, run in runs_by_seed(runs, arm).items() if run.job in curves_by_job}
        for arm in comparison.arms
    }
    baseline_curves = curves[comparison.baseline]
    metrics = [name for name in REACH_METRICS if baseline_curves and all(final_value(curve, name) is not None for curve in baseline_curves.values())]
    reaches = []
    for metric in metrics:
        target = statistics.fmean(final_value(curve, metric) for curve in baseline_curves.values())
        for arm in [comparison.baseline, *(a for a in comparison.arms if a != comparison.baseline)]:
            arm_curves = {seed: curve for seed, curve in curves[arm].items() if final_value(curve, metric) is not None}
            if arm_curves:
                reaches.append(Reach(
                    arm, metric, target,
                    {seed: time_to_reach(curve, metric, target, metric_direction(metric)) for seed, curve in arm_curves.items()},
                    {seed: (float(curve[-1]["step"]), float(curve[-1]["seconds"])) for seed, curve in arm_curves.items()},
                ))
    return reaches


def curves_of(runs: Sequence[Run]) -> dict[str, list[dict]]:
    """job -> learning curve of every finished run that wrote one."""
    loaded = {run.job: load_curve(run) for run in runs if run.status == "ok" and run.job_dir is not None}
    return {job: curve for job, curve in loaded.items() if curve}


# Tables.


def summarize(runs: Sequence[Run]) -> list[Summary]:
    """One ``Summary`` per (method, ratio, reference, selector) of the finished runs, in order of first appearance."""
    summaries: dict[tuple, Summary] = {}
    for run in runs:
        if run.status != "ok":
            continue
        summary = summaries.setdefault(run.group, Summary(*run.group, values={name: [] for name in SUMMARY_METRICS}, runs=0))
        summary.runs += 1
        for name in SUMMARY_METRICS:
            if name in run.metrics:
                summary.values[name].append(run.metrics[name])
    return list(summaries.values())


def format_number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def format_signed(value: float) -> str:
    return f"{value:+.3g}"


def format_interval(interval: tuple[float, float]) -> str:
    return f"[{format_signed(interval[0])}, {format_signed(interval[1])}]"


def format_p(p: float | None) -> str:
    return "" if p is None else f"{p:.2g}"


def format_stat(values: Sequence[float]) -> str:
    """``mean ± std`` over seeds (the mean alone for one value, blank for none)."""
    if len(values) < 2:
        return format_number(values[0] if values else None)
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def run_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["job", "run", "status", "seed", *RUN_METRICS]
    rows = [[r.job, r.name, r.status, "" if r.seed is None else str(r.seed), *(format_number(r.metrics.get(m)) for m in RUN_METRICS)] for r in runs]
    return header, rows


def summary_rows(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """The summary table; a ``selector`` column when some arm selects with a model other than its reference."""
    selectors = any(s.selector for s in summaries)
    header = ["method", "ratio", "reference", *(["selector"] if selectors else []), "runs", *SUMMARY_METRICS.values()]
    rows = [
        [s.method or "", format_number(s.ratio), s.reference or "", *([s.selector or ""] if selectors else []), str(s.runs),
         *(format_stat(s.values[m]) for m in SUMMARY_METRICS)]
        for s in summaries
    ]
    return header, rows


def failed_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    return ["job", "run", "status", "error"], [[r.job, r.name, r.status, r.error or ""] for r in runs if r.status != "ok"]


def verdict_rows(comparison: Comparison, paired: PairedResults) -> tuple[list[str], list[list[str]]]:
    """One row per primary contrast and primary metric: difference, interval, p-values, Holm's verdict; a primary
    arm with nothing to pair gets one row saying why."""
    header = ["contrast", "metric", "difference", "95% interval", "seeds", "prompts", "p", "Holm p", "verdict"]
    rows = []
    for arm in comparison.primary:
        members = [c for c in paired.contrasts if c.arm == arm and c.verdict is not None]
        rows += [[arm, c.metric, format_signed(c.difference), format_interval(c.interval), str(len(c.seeds)), str(c.prompts),
                  format_p(c.p_value), format_p(c.holm_p), c.verdict] for c in members]
        if not members:
            rows.append([arm, "", "", "", "", "", "", "", f"not compared: {paired.unpaired.get(arm, 'no primary metric in its scores')}"])
    return header, rows


def contrast_rows(contrasts: Sequence[Contrast]) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "baseline", "arm value", "difference", "95% interval", "per-seed differences", "seeds", "prompts", "p"]
    rows = [
        [c.arm + (" (primary)" if c.primary else ""), format_number(c.baseline_mean), format_number(c.arm_mean), format_signed(c.difference),
         format_interval(c.interval), ", ".join(f"s{seed}: {format_signed(d)}" for seed, d in zip(c.seeds, c.seed_differences)),
         str(len(c.seeds)), str(c.prompts), format_p(c.p_value)]
        for c in contrasts
    ]
    return header, rows


def seed_mean_cell(values: dict[int, float | None], last: dict[int, float]) -> str:
    """Mean over seeds with its 95% bootstrap interval over seeds (percentile; ``bootstrap_means`` of one column);
    where some seed did not reach, the mean is at least that of (reached value, else the curve's last value)."""
    reached = [v for v in values.values() if v is not None]
    if len(reached) < len(values):
        bound = statistics.fmean(last[s] if v is None else v for s, v in values.items())
        return f"≥ {format_number(bound)} ({len(values) - len(reached)} of {len(values)} seeds did not reach)"
    mean = statistics.fmean(reached)
    if len(reached) == 1:
        return f"{format_number(mean)} (one seed)"
    low, high = percentile_interval(bootstrap_means(np.array(reached)[:, None]))
    return f"{format_number(mean)} [{format_number(low)}, {format_number(high)}]"


def reach_rows(reaches: Sequence[Reach]) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "seeds reached", "steps: mean [95% interval]", "seconds: mean [95% interval]", "steps per seed", "seconds per seed"]
    rows = []
    for reach in reaches:
        reached = sum(v is not None for v in reach.per_seed.values())
        cells = []
        for index in (0, 1):
            values = {seed: None if v is None else v[index] for seed, v in reach.per_seed.items()}
            last = {seed: v[index] for seed, v in reach.last.items()}
            per_seed = ", ".join(f"s{seed}: " + (format_number(v) if v is not None else f"not by {format_number(last[seed])}") for seed, v in values.items())
            cells.append((seed_mean_cell(values, last), per_seed))
        rows.append([reach.arm, f"{reached} of {len(reach.per_seed)}", cells[0][0], cells[1][0], cells[0][1], cells[1][1]])
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title)
    for name in header:
        table.add_column(name, overflow="fold")  # a terminal too narrow wraps long run names rather than cut them
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # cells are text: "[...]" is an interval, not markup
    return table


# The report's sections.


def claims_text() -> str:
    claims = "; ".join(f"({number}) {claim}" for number, claim in enumerate(CLAIMS, 1))
    return (
        f"The paper's claims, as it numbers them: {claims}. Claim 1 is tested by the steps and wall-clock seconds to "
        "reach the baseline's final score (every method runs the full forward and backward on every token, so "
        "selection can only save compute by needing fewer steps or pairs); claim 2 by selection precision (and "
        "`selection/auroc` on the learning curves) across references; claim 3 by the paired differences when the "
        "baseline is DPO or distillation. How to read the statistics: `docs/statistics.md` in selalign."
    )


def paired_section(comparison: Comparison | None, paired: PairedResults | None, arms: Sequence[str], forest_image: str | None, error: str | None) -> list[str]:
    lines = ["## Paired differences from the baseline"]
    if error is not None:
        return [*lines, f"**Not computed:** {error}"]
    if comparison is None or paired is None:
        return [*lines, "No baseline arm is set: set `report.baseline` and `report.primary` in the experiment, or pass "
                        f"`--baseline` and `--primary` to `python -m selalign.report`. The sweep's arms: {', '.join(arms) or 'none'}."]
    seeds = sorted({len(c.seeds) for c in paired.contrasts})
    lines.append(
        f"Baseline arm: `{comparison.baseline}`. Each difference is arm − baseline on a per-prompt gold value "
        "(`gold_scores.jsonl`: the mean over a prompt's samples), paired by seed (same batch order and sampling seeds) "
        "and by held-out prompt, averaged over the seeds both arms ran × the prompts all those runs scored. "
        f"95% interval: crossed bootstrap, {BOOTSTRAP_ROUNDS} rounds (numpy `default_rng({BOOTSTRAP_SEED})`); each round "
        "draws the seeds and, independently, the prompts with replacement and averages the cells they cross; percentile "
        "interval. p: two-sided bootstrap p-value of a zero difference."
    )
    if seeds and seeds[0] < FEW_SEEDS:
        lines.append(
            f"Few seeds ({seeds[0]} for some contrasts): resampling S seeds gives their spread only (S − 1)/S of its "
            "variance and never goes beyond their range, so the interval is too narrow on the seed side; read it with "
            "the per-seed differences."
        )
    if comparison.primary:
        lines += [
            "### Primary contrasts: Holm-corrected verdicts",
            f"Holm's step-down over the {paired.family} tests of the primary contrasts on "
            f"{' and '.join(f'`{m}`' for m in PRIMARY_METRICS)} (where present), alpha = {ALPHA}, each test the bootstrap "
            "p-value above. holds: the arm is better than the baseline after Holm; reversed: worse; not resolved: neither.",
            markdown_table(*verdict_rows(comparison, paired)),
        ]
    if forest_image:
        lines.append(f"![each arm minus the baseline, 95% bootstrap intervals]({forest_image})")
    for arm, reason in paired.unpaired.items():
        lines.append(f"Not paired: `{arm}`: {reason}.")
    for metric in dict.fromkeys(c.metric for c in paired.contrasts):
        members = [c for c in paired.contrasts if c.metric == metric]
        lines += [f"### {metric} ({DIRECTION_WORDS[metric_direction(metric)]})", markdown_table(*contrast_rows(members))]
        lines += [f"`{c.arm}`: {c.left_out} prompts scored by only some of the paired runs are left out." for c in members if c.left_out]
    return lines


def reach_section(comparison: Comparison | None, reaches: Sequence[Reach], error: str | None) -> list[str]:
    lines = ["## Steps and seconds to reach the baseline's final score (claim 1)"]
    if error is not None:
        return [*lines, f"**Not computed:** {error}"]
    if comparison is None:
        return [*lines, "No baseline arm is set."]
    if not reaches:
        return [*lines, f"No learning curves: no finished run of the baseline `{comparison.baseline}` wrote `{CURVE_FILE}` with a score metric."]
    lines.append(
        "Target: the baseline's final value on its learning curve (`curve.jsonl`), the mean over its seeds. Per seed, "
        "the first curve point at or beyond the target (at or below where lower is better), interpolated linearly "
        "between it and the point before; seconds are the run's wall-clock, reference forwards and cache builds "
        f"included. Mean over seeds, 95% interval: bootstrap over seeds ({BOOTSTRAP_ROUNDS} rounds, percentile). A seed "
        "that never reaches the target counts as its curve's last step, so the mean becomes a lower bound (≥)."
    )
    for metric in dict.fromkeys(r.metric for r in reaches):
        members = [r for r in reaches if r.metric == metric]
        seeds = len(next(r for r in members if r.arm == comparison.baseline).per_seed)
        lines += [f"### {metric} ≥ {format_number(members[0].target)}" if metric_direction(metric) > 0 else f"### {metric} ≤ {format_number(members[0].target)}",
                  f"Target: the baseline `{comparison.baseline}`'s final value, mean of {seeds} seeds.", markdown_table(*reach_rows(members))]
    return lines


def report_markdown(sweep_dir: Path, runs: Sequence[Run], summaries: Sequence[Summary], image_name: str, comparison: Comparison | None = None,
                    paired: PairedResults | None = None, reaches: Sequence[Reach] = (), forest_image: str | None = None,
                    frontier_image: str | None = None, errors: dict[str, str] | None = None) -> str:
    """The report; ``errors``: why the ``comparison`` or the ``curves`` could not be read, where they could not."""
    errors = errors or {}
    counts = {status: sum(r.status == status for r in runs) for status in ("ok", "failed", "unfinished")}
    arms = list(dict.fromkeys(r.arm for r in runs if r.arm is not None))
    sections = [
        f"# Sweep report: {sweep_dir}",
        f"{len(runs)} runs: {counts['ok']} finished, {counts['failed']} failed, {counts['unfinished']} unfinished.",
        claims_text(),
        "## Summary: mean ± std over seeds",
        markdown_table(*summary_rows(summaries)),
        f"![gold win rate and selection precision against the selection ratio]({image_name})",
        *paired_section(comparison, paired, arms, forest_image, errors.get("comparison")),
        *reach_section(comparison, reaches, errors.get("comparison") or errors.get("curves")),
        "## Gold reward against KL to the start",
        f"![gold mean reward against KL to the start]({frontier_image})" if frontier_image else
        "No run has both `gold/mean_reward` and `gold/kl_to_start` (benchmark=gold with kl_to_start).",
        "## Runs",
        markdown_table(*run_rows(runs)),
        "## Failed and unfinished runs",
        markdown_table(*failed_rows(runs)) if counts["failed"] + counts["unfinished"] else "None.",
    ]
    return "\n\n".join(sections) + "\n"


# Figures.


def plot_summaries(summaries: Sequence[Summary]) -> Figure:
    """Per metric of ``PLOTTED_METRICS``, one panel against the selection ratio: a line with std bars per (method,
    reference) of token-selective methods, a dashed level per (method, reference) of the others."""
    figure = Figure(figsize=(6 * len(PLOTTED_METRICS), 4.5), layout="constrained")
    for axes, (metric, title) in zip(figure.subplots(1, len(PLOTTED_METRICS), squeeze=False)[0], PLOTTED_METRICS.items(), strict=True):
        lines: dict[tuple, list[Summary]] = {}
        for s in summaries:
            if s.values[metric]:
                lines.setdefault((s.method, s.reference, s.selector, s.ratio is None), []).append(s)
        for (method, reference, selector, flat), members in lines.items():
            label = f"{method}, ref={reference}" + (f", sel={selector}" if selector else "")
            if flat:  # no selection: the same at every ratio
                axes.plot([0, 1], [statistics.mean(members[0].values[metric])] * 2, linestyle="--", label=label)
                continue
            members.sort(key=lambda s: s.ratio)
            means = [statistics.mean(s.values[metric]) for s in members]
            stds = [statistics.stdev(s.values[metric]) if len(s.values[metric]) > 1 else 0.0 for s in members]
            axes.errorbar([s.ratio for s in members], means, yerr=stds, marker="o", capsize=3, label=label)
        axes.set(title=title, xlabel="selection ratio (share of response tokens kept)", ylabel=metric, xlim=(0, 1.05))
        if lines:
            axes.legend(fontsize="small")
    return figure


def plot_forest(paired: PairedResults, baseline: str) -> Figure | None:
    """One panel per primary metric present: each arm's difference from the baseline with its 95% interval, one row
    per contrast (primary contrasts in colour, with their verdict), zero marked; None without such contrasts."""
    metrics = [m for m in PRIMARY_METRICS if any(c.metric == m for c in paired.contrasts)]
    if not metrics:
        return None
    rows = [sum(c.metric == m for c in paired.contrasts) for m in metrics]
    figure = Figure(figsize=(10, sum(1.4 + 0.35 * n for n in rows)), layout="constrained")
    for axes, metric in zip(figure.subplots(len(metrics), 1, squeeze=False, height_ratios=[1.4 + 0.35 * n for n in rows])[:, 0], metrics, strict=True):
        members = [c for c in paired.contrasts if c.metric == metric]
        positions = list(range(len(members)))[::-1]  # the first contrast on top
        for position, c in zip(positions, members, strict=True):
            errors = [[c.difference - c.interval[0]], [c.interval[1] - c.difference]]
            axes.errorbar([c.difference], [position], xerr=errors, fmt="o", capsize=3, color="C0" if c.primary else "0.45")
        axes.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
        axes.set_yticks(positions, [c.arm + (f" [{c.verdict}]" if c.verdict else "") for c in members], fontsize="small")
        axes.set_ylim(-0.7, len(members) - 0.3)
        axes.set_title(f"{metric}: arm − {baseline}", fontsize="medium")
        axes.set_xlabel(f"difference, 95% bootstrap interval over seeds × prompts ({DIRECTION_WORDS[metric_direction(metric)]})")
    return figure


FRONTIER_X, FRONTIER_Y = "gold/kl_to_start", "gold/mean_reward"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_frontier(runs: Sequence[Run], curves: dict[str, list[dict]]) -> Figure | None:
    """Gold mean reward against KL to the start: each finished run's final point (small), the mean over seeds per
    label and beta (large; connected in order of beta where a label ran several), and each run's learning-curve
    checkpoints where they carry both (thin lines). One colour per method, one marker per reference; None when no
    run has both values."""
    finals = [r for r in runs if r.status == "ok" and FRONTIER_X in r.metrics and FRONTIER_Y in r.metrics]
    traced = {r.job: [(row[FRONTIER_X], row[FRONTIER_Y]) for row in curves.get(r.job, []) if row.get(FRONTIER_X) is not None and row.get(FRONTIER_Y) is not None]
              for r in runs}
    traced = {job: points for job, points in traced.items() if points}
    if not finals and not traced:
        return None
    shown = [r for r in runs if r in finals or r.job in traced]
    colours = {m: colormaps["tab10"](i % 10) for i, m in enumerate(dict.fromkeys(r.method for r in shown))}
    markers = {ref: MARKERS[i % len(MARKERS)] for i, ref in enumerate(dict.fromkeys(r.reference for r in shown))}
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    for run in shown:
        if run.job in traced:
            xs, ys = zip(*traced[run.job])
            axes.plot(xs, ys, color=colours[run.method], alpha=0.35, linewidth=1, marker=".", markersize=3)
    by_label: dict[str, dict[float | None, list[Run]]] = {}
    for run in finals:
        axes.scatter(run.metrics[FRONTIER_X], run.metrics[FRONTIER_Y], color=colours[run.method], marker=markers[run.reference], alpha=0.4, s=16)
        by_label.setdefault(run.label or run.name, {}).setdefault(run.beta, []).append(run)
    for label, by_beta in by_label.items():
        betas = sorted(by_beta, key=lambda b: (b is None, b or 0.0))
        xs = [statistics.fmean(r.metrics[FRONTIER_X] for r in by_beta[b]) for b in betas]
        ys = [statistics.fmean(r.metrics[FRONTIER_Y] for r in by_beta[b]) for b in betas]
        first = by_beta[betas[0]][0]
        swept = len(betas) > 1
        axes.plot(xs, ys, color=colours[first.method], marker=markers[first.reference], markersize=8, linestyle="-" if swept else "none",
                  label=label + (" (β swept)" if swept else ""))
        if swept:
            for x, y, beta in zip(xs, ys, betas):
                axes.annotate(f"β={beta:g}" if beta is not None else "β=?", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    axes.set(xlabel="KL to the start (gold/kl_to_start, nats per answer)", ylabel="gold mean reward",
             title="gold reward against KL to the start: runs (mean over seeds large), learning curves (lines)")
    axes.title.set_fontsize("medium")
    if by_label:
        axes.legend(fontsize="x-small")
    return figure


# Writing it.


def summary_console() -> Console:
    """The terminal's console; in logs and pipes one wide enough that no line of a summary wraps mid-word."""
    console = Console()
    return console if console.is_terminal else Console(width=1000)


def write_report(sweep_dir: Path, baseline: str | None = None, primary: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Writes ``report.md``, ``report.png`` and, where there is something to draw, ``report_forest.png`` and
    ``report_frontier.png`` into ``sweep_dir``; prints the summary and the primary verdicts; returns the paths of
    ``report.md`` and ``report.png``. ``baseline``, ``primary``: instead of the jobs' ``report`` node.

    Raises ``ComparisonError`` after writing everything else when the comparison cannot be made as configured (the
    report says why in place of it)."""
    runs = load_runs(sweep_dir)
    summaries = summarize(runs)
    errors, comparison, paired, reaches, curves = {}, None, None, [], {}
    try:
        comparison = comparison_of(runs, baseline, primary)
        paired = paired_differences(runs, comparison) if comparison else None
    except ComparisonError as error:
        errors["comparison"], comparison = str(error), None
    try:
        curves = curves_of(runs)
        reaches = reach_results(runs, comparison, curves) if comparison else []
    except ComparisonError as error:
        errors["curves"] = str(error)
    markdown_path, image_path = sweep_dir / "report.md", sweep_dir / "report.png"
    plot_summaries(summaries).savefig(image_path, dpi=120)
    written = [markdown_path, image_path]
    images = {}
    for name, figure in (("report_forest.png", plot_forest(paired, comparison.baseline) if paired else None), ("report_frontier.png", plot_frontier(runs, curves))):
        if figure is not None:
            figure.savefig(sweep_dir / name, dpi=120)
            images[name] = name
            written.append(sweep_dir / name)
    markdown_path.write_text(report_markdown(sweep_dir, runs, summaries, image_path.name, comparison, paired, reaches,
                                             images.get("report_forest.png"), images.get("report_frontier.png"), errors))
    console = summary_console()
    console.print(rich_table("summary: mean ± std over seeds", *summary_rows(summaries)))
    if comparison and paired and comparison.primary:
        console.print(rich_table(f"primary contrasts against {comparison.baseline} (Holm, alpha {ALPHA})", *verdict_rows(comparison, paired)))
    if any(r.status != "ok" for r in runs):
        console.print(rich_table("failed and unfinished runs", *failed_rows(runs)))
    for error in errors.values():
        console.print(f"report: {error}", style="red", soft_wrap=True, highlight=False, markup=False)
    console.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True, highlight=False)
    if errors:
        raise ComparisonError("; ".join(errors.values()))
    return markdown_path, image_path


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks``): writes and prints the report of every multirun when it ends. A
    comparison that cannot be made is printed, not raised: the sweep's runs are done and the rest of the report is
    written."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        try:
            write_report(Path(config.hydra.sweep.dir))
        except ComparisonError:
            pass  # already printed and written into report.md


# Rows of a run's summary besides the benchmark's own metrics (everything outside train/, val/, data/ and time/).
RUN_SUMMARY_METRICS = {"val/rewards/accuracies": "validation reward accuracy", "val/selection/precision": "selection precision (val)", "val/selection/recall": "selection recall (val)"}
TIME_METRICS = {"time/train_seconds": "train seconds", "time/train_tokens_per_second": "train tokens per second"}


def data_summary_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    """Rows for what happened to the data, where something did: rows skipped as invalid, pairs truncated."""
    rows = []
    if metrics.get("data/skipped_rows"):
        rows.append(("invalid rows skipped (data.on_invalid=skip)", f"{metrics['data/skipped_rows']:.0f}, listed in skipped_rows.jsonl"))
    for split in ("train", "validation"):
        prompts, responses = metrics.get(f"data/{split}/truncated_prompts", 0), metrics.get(f"data/{split}/truncated_responses", 0)
        if prompts or responses:
            pairs = metrics.get(f"data/{split}/pairs")
            of = f" of {pairs:.0f}" if pairs is not None else ""
            rows.append((f"{split} pairs cut to data.max_length", f"{prompts:.0f}{of} prompts, {responses:.0f}{of} response pairs"))
    return rows


def run_summary_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(label, value) rows of a run's summary: the benchmark's top-level metrics (a value with a start version as
    start → trained, with the trained value's standard error where the evaluation gives one), selection precision and
    recall, skipped and truncated data, then time and throughput."""

    def value(name: str) -> str:
        se = metrics.get(f"{name}_se")
        return format_number(metrics[name]) + (f" ± {se:.2g}" if se is not None else "")

    rows, shown = [], set()
    if "gold/win_rate" in metrics:
        rows.append(("gold win rate (trained vs start, ties half)", value("gold/win_rate")))
        shown.add("gold/win_rate")
    top_level = [name for name in sorted(metrics) if name.count("/") == 1 and not name.startswith(("train/", "val/", "data/", "time/")) and not name.endswith("_se")]
    for name in top_level:  # breakdowns such as gold/accuracy/<kind> stay in metrics.json
        group, metric = name.split("/")
        if name in shown or metric.startswith("start_"):
            continue
        start = f"{group}/start_{metric}"
        if start in metrics:
            rows.append((f"{group} {metric.replace('_', ' ')}, start → trained", f"{format_number(metrics[start])} → {value(name)}"))
            shown |= {name, start}
    rows += [(label, format_number(metrics[name])) for name, label in RUN_SUMMARY_METRICS.items() if name in metrics]
    rows += [(name, value(name)) for name in top_level if name not in shown and not name.split("/")[1].startswith("start_")]
    rows += data_summary_rows(metrics)
    rows += [(label, f"{metrics[name]:.0f}" if name.endswith("per_second") else format_number(metrics[name])) for name, label in TIME_METRICS.items() if name in metrics]
    return rows


def print_run_summary(metrics: dict[str, float], run_dir: Path) -> None:
    console = summary_console()
    console.print(f"run: {run_dir} (every metric: metrics.json)", soft_wrap=True, highlight=False)
    table = Table("metric", "value")
    for row in run_summary_rows(metrics):
        table.add_row(*row)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selalign.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir: one sub-dir per job (hydra.sweep.dir)")
    parser.add_argument("--baseline", help="the arm every other arm is compared with (instead of the jobs' report.baseline)")
    parser.add_argument("--primary", nargs="*", help="the arms whose contrasts get Holm-corrected verdicts (instead of report.primary)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    try:
        write_report(args.sweep_dir, args.baseline, args.primary)
    except ComparisonError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
