"""A sweep's results in one place: `python -m selalign.report <multirun dir>`.

Reads every job dir of the sweep (``<dir>/<job>/`` holding ``.hydra/``, ``config.yaml``, ``metrics.json`` or ``error.txt``),
writes ``<dir>/report.md`` (one row per run; mean ± std over seeds per (method, ratio, reference); the failed runs)
and ``<dir>/report.png`` (gold win rate and selection precision against the selection ratio), and prints the
summary. Works on partial sweeps: a missing metric is a blank cell, a job without ``metrics.json`` is failed (with
``error.txt``) or unfinished.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from selalign.loggers import method_label, reference_label, run_name, selection_ratio

JOB_MARKERS = (".hydra", "config.yaml", "metrics.json", "error.txt")  # any of them makes a child dir a job
RUN_METRICS = ("gold/win_rate", "gold/mean_reward", "gold/accuracy", "val/rewards/accuracies", "val/selection/precision", "val/selection/recall", "time/train_seconds")
SUMMARY_METRICS = {
    "gold/win_rate": "gold win rate", "gold/mean_reward": "gold mean reward", "gold/accuracy": "gold accuracy",
    "val/selection/precision": "selection precision", "time/train_seconds": "train seconds",
}
PLOTTED_METRICS = {"gold/win_rate": "gold win rate", "val/selection/precision": "selection precision (val)"}


@dataclass
class Run:
    """One job of a sweep. ``method``, ``ratio`` (token-selective methods only), ``reference`` and ``seed`` come
    from its config and Hydra choices (None where the job left no config); ``error``: the last line of ``error.txt``."""

    job: str
    name: str
    method: str | None = None
    ratio: float | None = None
    reference: str | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    finished: bool = False

    @property
    def status(self) -> str:
        return "ok" if self.finished else "failed" if self.error is not None else "unfinished"

    @property
    def group(self) -> tuple[str | None, float | None, str | None]:
        return self.method, self.ratio, self.reference


@dataclass
class Summary:
    """The finished runs of one (method, ratio, reference): per metric, the values over seeds."""

    method: str | None
    ratio: float | None
    reference: str | None
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


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def load_run(job_dir: Path) -> Run:
    """A job dir as a ``Run``; named as on wandb (``selalign.loggers.run_name``) when it has a config."""
    cfg, choices = job_config(job_dir)
    metrics_file, error_file = job_dir / "metrics.json", job_dir / "error.txt"
    run = Run(
        job=job_dir.name,
        name=job_dir.name,
        metrics=json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
        error=last_line(error_file.read_text()) if error_file.exists() else None,
        finished=metrics_file.exists(),
    )
    if cfg is not None:
        run.name, run.method, run.ratio = run_name(choices, cfg), method_label(cfg), selection_ratio(cfg)
        run.reference, run.seed = reference_label(choices, cfg), cfg.seed
    return run


def load_runs(sweep_dir: Path) -> list[Run]:
    return [load_run(d) for d in job_dirs(sweep_dir)]


def summarize(runs: Sequence[Run]) -> list[Summary]:
    """One ``Summary`` per (method, ratio, reference) of the finished runs, in order of first appearance."""
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
    header = ["method", "ratio", "reference", "runs", *SUMMARY_METRICS.values()]
    rows = [
        [s.method or "", format_number(s.ratio), s.reference or "", str(s.runs), *(format_stat(s.values[m]) for m in SUMMARY_METRICS)]
        for s in summaries
    ]
    return header, rows


def failed_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    return ["job", "run", "status", "error"], [[r.job, r.name, r.status, r.error or ""] for r in runs if r.status != "ok"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def rich_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title)
    for name in header:
        table.add_column(name, overflow="fold")  # wrap long run names rather than cut them
    for row in rows:
        table.add_row(*row)
    return table


def report_markdown(sweep_dir: Path, runs: Sequence[Run], summaries: Sequence[Summary], image_name: str) -> str:
    counts = {status: sum(r.status == status for r in runs) for status in ("ok", "failed", "unfinished")}
    sections = [
        f"# Sweep report: {sweep_dir}",
        f"{len(runs)} runs: {counts['ok']} finished, {counts['failed']} failed, {counts['unfinished']} unfinished.",
        "## Summary: mean ± std over seeds",
        markdown_table(*summary_rows(summaries)),
        f"![gold win rate and selection precision against the selection ratio]({image_name})",
        "## Runs",
        markdown_table(*run_rows(runs)),
        "## Failed and unfinished runs",
        markdown_table(*failed_rows(runs)) if counts["failed"] + counts["unfinished"] else "None.",
    ]
    return "\n\n".join(sections) + "\n"


def plot_summaries(summaries: Sequence[Summary]) -> Figure:
    """Per metric of ``PLOTTED_METRICS``, one panel against the selection ratio: a line with std bars per (method,
    reference) of token-selective methods, a dashed level per (method, reference) of the others."""
    figure = Figure(figsize=(6 * len(PLOTTED_METRICS), 4.5), layout="constrained")
    for axes, (metric, title) in zip(figure.subplots(1, len(PLOTTED_METRICS), squeeze=False)[0], PLOTTED_METRICS.items(), strict=True):
        lines: dict[tuple, list[Summary]] = {}
        for s in summaries:
            if s.values[metric]:
                lines.setdefault((s.method, s.reference, s.ratio is None), []).append(s)
        for (method, reference, flat), members in lines.items():
            label = f"{method}, ref={reference}"
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


def write_report(sweep_dir: Path) -> tuple[Path, Path]:
    """Writes ``report.md`` and ``report.png`` into ``sweep_dir``, prints the summary; returns both paths."""
    runs = load_runs(sweep_dir)
    summaries = summarize(runs)
    markdown_path, image_path = sweep_dir / "report.md", sweep_dir / "report.png"
    plot_summaries(summaries).savefig(image_path, dpi=120)
    markdown_path.write_text(report_markdown(sweep_dir, runs, summaries, image_path.name))
    console = Console()
    console.print(rich_table("summary: mean ± std over seeds", *summary_rows(summaries)))
    if any(r.status != "ok" for r in runs):
        console.print(rich_table("failed and unfinished runs", *failed_rows(runs)))
    console.print(f"wrote {markdown_path} and {image_path}", soft_wrap=True)
    return markdown_path, image_path


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks``): writes and prints the report of every multirun when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_report(Path(config.hydra.sweep.dir))


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
    """(label, value) rows of a run's summary: the gold win rate, the mean gold reward start → trained, selection
    precision and recall, every other top-level benchmark metric, skipped and truncated data, then time and
    throughput."""
    rows = []
    if "gold/win_rate" in metrics:
        rows.append(("gold win rate (trained vs start, ties half)", format_number(metrics["gold/win_rate"])))
    if "gold/mean_reward" in metrics and "gold/start_mean_reward" in metrics:
        rows.append(("gold mean reward, start → trained", f"{metrics['gold/start_mean_reward']:.4g} → {metrics['gold/mean_reward']:.4g}"))
    shown = {"gold/win_rate", "gold/mean_reward", "gold/start_mean_reward"}
    rows += [(label, format_number(metrics[name])) for name, label in RUN_SUMMARY_METRICS.items() if name in metrics]
    rows += [  # breakdowns such as gold/accuracy/<kind> stay in metrics.json
        (name, format_number(value)) for name, value in sorted(metrics.items())
        if name not in shown and name.count("/") == 1 and not name.startswith(("train/", "val/", "data/", "time/"))
    ]
    rows += data_summary_rows(metrics)
    rows += [(label, f"{metrics[name]:.0f}" if name.endswith("per_second") else format_number(metrics[name])) for name, label in TIME_METRICS.items() if name in metrics]
    return rows


def summary_console() -> Console:
    """The terminal's console; in logs and pipes one wide enough that no line of a summary wraps mid-word."""
    console = Console()
    return console if console.is_terminal else Console(width=1000)


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
    sweep_dir = parser.parse_args(argv).sweep_dir
    if not sweep_dir.is_dir():
        parser.error(f"not a directory: {sweep_dir}")
    write_report(sweep_dir)


if __name__ == "__main__":
    main()
