"""`python -m selalign.report`: runs, mean ± std over seeds, failed runs, plots, on real and hand-made sweeps."""

import json

import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from support.configs import compose_train, tiny_overrides
from selalign.report import load_runs, main, print_run_summary, run_summary_rows, summarize, summary_rows
from selalign.train import train


def section(markdown: str, title: str) -> list[str]:
    """The table rows (header and separator left out) of the section ``## <title>``."""
    lines = markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0].splitlines()
    return [line for line in lines if line.startswith("| ")][2:]


def write_job(sweep, job, choices, config, metrics=None, error=None, started=True):
    """A job dir as Hydra (.hydra/) and selalign.train (config.yaml once started, then metrics.json or error.txt) leave it."""
    job_dir = sweep / str(job)
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, job_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(config, job_dir / ".hydra" / "config.yaml")
    if started:
        OmegaConf.save(config, job_dir / "config.yaml")
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (job_dir / "error.txt").write_text(error)


@pytest.fixture
def hand_made_sweep(tmp_path):
    """Selective-DPO at ratios 0.2 (3 seeds) and 0.8 (1 seed, no gold metric), DPO, a failed job and one killed early."""
    base = compose_train("model=hub", "model.name_or_path=/m", "ref_model=hub", "ref_model.name_or_path=/r", "data=files", "data.path=/d", "benchmark=none", output_dir=tmp_path)
    selective = {"method": "selective_dpo", "ref_model": "world_large_dpo"}
    sweep = tmp_path / "sweep"

    def config(method="selective_dpo", ratio=0.2, seed=0):
        cfg = OmegaConf.merge(base, {"seed": seed, "method": {"ratio": ratio}})
        if method == "dpo":
            cfg.method = {"_target_": "selalign.objectives.DPO", "beta": 0.1}
        return OmegaConf.to_container(cfg, resolve=True)

    for seed, (win, reward) in enumerate([(0.5, -0.4), (0.6, -0.2), (0.7, 0.0)]):
        metrics = {"gold/win_rate": win, "gold/mean_reward": reward, "val/selection/precision": 0.3, "time/train_seconds": 10.0}
        write_job(sweep, seed, selective, config(seed=seed), metrics)
    write_job(sweep, 3, selective, config(ratio=0.8), {"val/selection/precision": 0.2})
    write_job(sweep, 4, {"method": "dpo", "ref_model": "world_large_dpo"}, config("dpo"), {"gold/win_rate": 0.55})
    write_job(sweep, 5, selective, config(seed=1, ratio=0.8), error="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n\n")
    write_job(sweep, 6, selective, config(seed=2, ratio=0.8), started=False)
    return sweep


def test_summary_is_mean_and_std_over_seeds_per_method_ratio_reference(hand_made_sweep):
    header, rows = summary_rows(summarize(load_runs(hand_made_sweep)))
    assert header == ["method", "ratio", "reference", "runs", "gold win rate", "gold mean reward", "gold accuracy", "selection precision", "train seconds"]
    assert rows == [
        ["selective_dpo", "0.2", "world_large_dpo", "3", "0.6 ± 0.1", "-0.2 ± 0.2", "", "0.3 ± 0", "10 ± 0"],
        ["selective_dpo", "0.8", "world_large_dpo", "1", "", "", "", "0.2", ""],
        ["dpo", "", "world_large_dpo", "1", "0.55", "", "", "", ""],
    ]


def test_report_lists_every_run_and_the_failed_ones(hand_made_sweep, capsys):
    main([str(hand_made_sweep)])
    markdown = (hand_made_sweep / "report.md").read_text()
    runs = section(markdown, "Runs")
    assert len(runs) == 7
    assert runs[0].startswith("| 0 | selective_dpo-r0.2-ref=world_large_dpo-s0 | ok | 0 | 0.5 | -0.4 |")
    assert runs[4].startswith("| 4 | dpo-ref=world_large_dpo-s0 | ok | 0 | 0.55 |")
    assert section(markdown, "Failed and unfinished runs") == [
        "| 5 | selective_dpo-r0.8-ref=world_large_dpo-s1 | failed | RuntimeError: CUDA out of memory |",
        "| 6 | selective_dpo-r0.8-ref=world_large_dpo-s2 | unfinished |  |",
    ]
    assert "7 runs: 5 finished, 1 failed, 1 unfinished." in markdown
    assert imread(hand_made_sweep / "report.png").shape[2] in (3, 4)
    printed = capsys.readouterr().out
    assert "mean ± std over seeds" in printed and "RuntimeError" in printed


def test_report_of_two_trained_jobs(tiny_lm, tiny_ref, pairs_file, tmp_path):
    sweep = tmp_path / "sweep"
    for job, seed in enumerate([0, 1]):
        overrides = [*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), "logger=none", "callbacks=none", f"seed={seed}"]
        train(compose_train(*overrides, output_dir=sweep / str(job)))
    main([str(sweep)])
    markdown = (sweep / "report.md").read_text()
    assert [row.split(" | ")[2] for row in section(markdown, "Runs")] == ["ok", "ok"]
    assert len(section(markdown, "Summary: mean ± std over seeds")) == 1
    assert (sweep / "report.png").stat().st_size > 0


def test_run_summary_shows_gold_before_and_after_and_selection_then_other_benchmark_metrics():
    metrics = {
        "gold/win_rate": 0.625, "gold/start_mean_reward": -0.5, "gold/mean_reward": -0.25, "gold/accuracy": 0.3, "gold/accuracy/city": 0.5,
        "val/selection/precision": 0.4, "val/rewards/accuracies": 0.75, "val/loss": 0.6, "train/loss": 0.5,
        "data/truncated_prompts": 0.0, "time/train_seconds": 12.5,
    }
    assert run_summary_rows(metrics) == [
        ("gold win rate (trained vs start, ties half)", "0.625"),
        ("gold mean reward, start → trained", "-0.5 → -0.25"),
        ("validation reward accuracy", "0.75"),
        ("selection precision (val)", "0.4"),
        ("gold/accuracy", "0.3"),
        ("train seconds", "12.5"),
    ]
    # An MT-Bench run has no gold metrics: its own metrics are the summary.
    assert run_summary_rows({"mt_bench/score": 6.5, "train/loss": 0.5}) == [("mt_bench/score", "6.5")]


def test_run_summary_shows_skipped_and_truncated_data_and_throughput():
    metrics = {
        "val/rewards/accuracies": 0.5, "data/skipped_rows": 3.0, "data/train/pairs": 90.0, "data/train/truncated_prompts": 4.0,
        "data/train/truncated_responses": 2.0, "data/validation/pairs": 10.0, "data/validation/truncated_prompts": 0.0,
        "data/validation/truncated_responses": 0.0, "time/train_seconds": 20.0, "time/train_tokens_per_second": 1234.56,
    }
    assert run_summary_rows(metrics) == [
        ("validation reward accuracy", "0.5"),
        ("invalid rows skipped (data.on_invalid=skip)", "3, listed in skipped_rows.jsonl"),
        ("train pairs cut to data.max_length", "4 of 90 prompts, 2 of 90 response pairs"),
        ("train seconds", "20"),
        ("train tokens per second", "1235"),
    ]
    assert [label for label, _ in run_summary_rows({"data/skipped_rows": 0.0, "data/train/truncated_prompts": 0.0})] == []


def test_run_summary_in_a_log_does_not_wrap(capsys, tmp_path):
    run_dir = tmp_path / "outputs" / "multirun" / "ratio_ablation" / "2026-11-26_10-00-00" / "12"
    metrics = {"val/rewards/accuracies": 0.5, "alpaca_eval/length_controlled_win_rate_against_the_reference": 0.25}
    print_run_summary(metrics, run_dir)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run: {run_dir} (every metric: metrics.json)"
    assert any("alpaca_eval/length_controlled_win_rate_against_the_reference" in line and "0.25" in line for line in lines)
