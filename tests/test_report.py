"""`python -m selalign.report`: runs, mean ± std over seeds, failed runs, plots; paired differences from the baseline
with crossed-bootstrap intervals and Holm's verdicts, steps to reach the baseline's score, on hand-computed cases and
on real and hand-made sweeps."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from support.configs import compose_train, tiny_overrides
from selalign.report import (
    BOOTSTRAP_ROUNDS, ComparisonError, bootstrap_means, bootstrap_p_value, comparison_of, holm, load_runs, main, match_arm, metric_direction,
    percentile_interval, print_run_summary, run_summary_rows, seed_mean_cell, summarize, summary_rows, time_to_reach, verdict, write_report,
)
from selalign.store import write_jsonl
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


def test_arms_that_differ_only_in_their_selector_are_summarized_apart(hand_made_sweep):
    config = OmegaConf.to_container(OmegaConf.load(hand_made_sweep / "0" / "config.yaml"))
    for job, selector in ((7, "world_large_dpo"), (8, "world_small_dpo")):
        with_selector = config | {"selector_model": {"name_or_path": f"/{selector}"}}
        write_job(hand_made_sweep, job, {"method": "selective_dpo", "ref_model": "world_large_dpo", "selector_model": selector}, with_selector,
                  {"gold/win_rate": 0.4 if job == 7 else 0.3})
    header, rows = summary_rows(summarize(load_runs(hand_made_sweep)))
    assert header[:5] == ["method", "ratio", "reference", "selector", "runs"]
    assert [row[:6] for row in rows[-2:]] == [["selective_dpo", "0.2", "world_large_dpo", "world_large_dpo", "1", "0.4"],
                                              ["selective_dpo", "0.2", "world_large_dpo", "world_small_dpo", "1", "0.3"]]
    assert rows[0][3] == ""  # no selector apart from the reference


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
        "gold/win_rate": 0.625, "gold/win_rate_se": 0.02, "gold/start_mean_reward": -0.5, "gold/mean_reward": -0.25, "gold/mean_reward_se": 0.031,
        "gold/accuracy": 0.3, "gold/start_accuracy": 0.1, "gold/accuracy_se": 0.0123, "gold/accuracy/city": 0.5, "gold/kl_to_start": 1.5,
        "val/selection/precision": 0.4, "val/rewards/accuracies": 0.75, "val/loss": 0.6, "train/loss": 0.5,
        "data/truncated_prompts": 0.0, "time/train_seconds": 12.5,
    }
    assert run_summary_rows(metrics) == [
        ("gold win rate (trained vs start, ties half)", "0.625 ± 0.02"),
        ("gold accuracy, start → trained", "0.1 → 0.3 ± 0.012"),
        ("gold mean reward, start → trained", "-0.5 → -0.25 ± 0.031"),
        ("validation reward accuracy", "0.75"),
        ("selection precision (val)", "0.4"),
        ("gold/kl_to_start", "1.5"),
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


# Statistics, against hand computation.


def test_bootstrap_over_seeds_of_differences_constant_over_prompts():
    # Resampling 2 seeds: replicate means 1, 2, 3 with probabilities 1/4, 1/2, 1/4; resampling prompts changes nothing.
    replicates = bootstrap_means([[1.0, 1.0], [3.0, 3.0]])
    assert len(replicates) == BOOTSTRAP_ROUNDS and set(np.unique(replicates)) == {1.0, 2.0, 3.0}
    assert [np.mean(replicates == v) for v in (1.0, 2.0, 3.0)] == pytest.approx([0.25, 0.5, 0.25], abs=0.02)
    assert percentile_interval(replicates) == (1.0, 3.0)


def test_bootstrap_over_prompts_of_differences_constant_over_seeds():
    replicates = bootstrap_means([[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]])
    assert [np.mean(replicates == v) for v in (1.0, 2.0, 3.0)] == pytest.approx([0.25, 0.5, 0.25], abs=0.02)
    assert percentile_interval(replicates) == (1.0, 3.0)


def test_bootstrap_resamples_seeds_and_prompts_independently():
    # d[s][i] = x_s + y_i, x = (0, 2), y = (0, 4): a replicate is mean(x drawn) + mean(y drawn), with X in {0, 1, 2}
    # and Y in {0, 2, 4} each with probabilities 1/4, 1/2, 1/4, independent: P(X + Y = 3) = P(1, 2) = 1/4,
    # P(X + Y = 2) = P(2, 0) + P(0, 2) = 1/16 + 2/16, P(0) = P(6) = 1/16 > 2.5%: the interval is [0, 6].
    replicates = bootstrap_means([[0.0, 4.0], [2.0, 6.0]])
    expected = {0: 1, 1: 2, 2: 3, 3: 4, 4: 3, 5: 2, 6: 1}
    assert {v: np.mean(replicates == v) for v in expected} == pytest.approx({v: n / 16 for v, n in expected.items()}, abs=0.015)
    assert percentile_interval(replicates) == (0.0, 6.0)
    # Resampling the cells jointly instead would never give 0 and 6 from this matrix with probability 1/16 each.


def test_constant_difference_gives_a_zero_width_interval_and_the_smallest_p_value():
    replicates = bootstrap_means(np.full((3, 5), 0.25))
    low, high = percentile_interval(replicates)
    assert low == pytest.approx(0.25, abs=1e-12) and high - low == pytest.approx(0.0, abs=1e-12)
    assert bootstrap_p_value(replicates) == (pytest.approx(2 / (BOOTSTRAP_ROUNDS + 1)), 1)
    assert bootstrap_p_value(bootstrap_means(np.full((2, 2), -1.0))) == (pytest.approx(2 / (BOOTSTRAP_ROUNDS + 1)), -1)
    assert bootstrap_p_value(bootstrap_means(np.zeros((2, 3))))[0] == 1.0
    # Differences that cancel exactly (0.1 + 0.2 - 0.3 is not 0 in floating point) give replicates of exactly 0 where they cancel.
    cancelling = bootstrap_means([[0.1, 0.2, -0.3]] * 2)
    assert 0.0 in cancelling and np.abs(cancelling[cancelling != 0]).min() > 1e-3


def test_bootstrap_is_reproducible_and_checks_its_input():
    d = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(bootstrap_means(d), bootstrap_means(d))
    with pytest.raises(ValueError, match=r"need a \[seeds, prompts\] matrix .* shape \(0, 4\)"):
        bootstrap_means(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bootstrap_means([[1.0, float("nan")]])


def test_bootstrap_p_value_counts_replicates_on_the_far_side_of_zero():
    # 9 of 99 replicates <= 0: p = 2 * (1 + 9) / 100
    replicates = np.array([-1.0] * 9 + [1.0] * 90)
    assert bootstrap_p_value(replicates) == (pytest.approx(0.2), 1)
    assert bootstrap_p_value(-replicates) == (pytest.approx(0.2), -1)


def test_holm_adjusts_step_down_on_hand_made_p_values():
    # Sorted: 0.01 * 3 = 0.03 <= 0.05 rejected; 0.03 * 2 = 0.06 > 0.05 stops; 0.04 * 1 = 0.04, raised to 0.06.
    assert holm([0.01, 0.04, 0.03]) == [(pytest.approx(0.03), True), (pytest.approx(0.06), False), (pytest.approx(0.06), False)]
    # All small: 0.001 * 4, 0.01 * 3, 0.012 * 2 = 0.024, 0.02 * 1 -> raised to 0.03; all rejected.
    assert [p for p, _ in holm([0.02, 0.001, 0.012, 0.01])] == pytest.approx([0.03, 0.004, 0.03, 0.03])
    assert all(rejected for _, rejected in holm([0.02, 0.001, 0.012, 0.01]))
    assert holm([0.6, 0.5]) == [(pytest.approx(1.0), False), (pytest.approx(1.0), False)]
    assert holm([]) == []


def test_verdicts_read_the_metric_direction():
    assert verdict(True, side=1, direction=1) == "holds" and verdict(True, side=-1, direction=1) == "reversed"
    assert verdict(True, side=-1, direction=-1) == "holds" and verdict(True, side=1, direction=-1) == "reversed"
    assert verdict(False, side=1, direction=1) == "not resolved" and verdict(True, side=1, direction=0) == "differs"
    assert [metric_direction(m) for m in ("gold/mean_reward", "gold/win_rate", "gold/accuracy/city", "probe/accuracy", "selection/auroc")] == [1] * 5
    assert [metric_direction(m) for m in ("gold/wrong", "gold/kl_to_start", "gold/repetitive", "gold/no_value")] == [-1, -1, -1, 0]


def curve(*points, metric="gold/mean_reward"):
    """Curve rows from (step, seconds, value) points."""
    return [{"step": step, "seconds": seconds, metric: value} for step, seconds, value in points]


def test_time_to_reach_interpolates_between_the_points_around_the_target():
    rising = curve((0, 0.0, -1.0), (10, 5.0, -0.5), (20, 10.0, 0.0), (30, 15.0, -0.5))
    assert time_to_reach(rising, "gold/mean_reward", -0.25, 1) == (15.0, 7.5)  # halfway from step 10 to 20
    assert time_to_reach(rising, "gold/mean_reward", -0.5, 1) == (10.0, 5.0)  # exactly at a point
    assert time_to_reach(rising, "gold/mean_reward", -2.0, 1) == (0.0, 0.0)  # already there at the start
    assert time_to_reach(rising, "gold/mean_reward", 0.5, 1) is None  # never
    falling = curve((0, 1.0, 0.4), (100, 3.0, 0.2), metric="gold/wrong")
    assert time_to_reach(falling, "gold/wrong", 0.25, -1) == (pytest.approx(75.0), pytest.approx(2.5))  # lower is better
    assert time_to_reach([{"step": 0, "seconds": 0.0}, *curve((4, 2.0, 1.0))], "gold/mean_reward", 0.5, 1) == (4.0, 2.0)  # rows without it skipped


def test_mean_steps_over_seeds_with_its_interval_and_a_seed_that_never_reaches():
    # Two seeds at 10 and 20 steps: replicate means 10, 15, 20 with probabilities 1/4, 1/2, 1/4.
    assert seed_mean_cell({0: 10.0, 1: 20.0}, {0: 30.0, 1: 30.0}) == "15 [10, 20]"
    assert seed_mean_cell({0: 10.0}, {0: 30.0}) == "10 (one seed)"
    # Not reached by step 30: the mean is at least (10 + 30) / 2.
    assert seed_mean_cell({0: 10.0, 1: None}, {0: 30.0, 1: 30.0}) == "≥ 20 (1 of 2 seeds did not reach)"


# Arms and the comparison's configuration.


def test_arms_are_named_by_a_unique_shorter_match_or_fail_naming_the_arms():
    arms = ["dpo-ref=world_large_dpo", "dpo_kd-ref=world_large_dpo", "selective_dpo-r0.4-ref=world_large_dpo", "selective_dpo-r0.4-ref=world_small_dpo"]
    assert match_arm("dpo", arms, "report.baseline") == "dpo-ref=world_large_dpo"
    assert match_arm("selective_dpo-ref=world_small_dpo", arms, "report.primary") == "selective_dpo-r0.4-ref=world_small_dpo"
    assert match_arm("dpo_kd-ref=world_large_dpo", arms, "report.primary") == "dpo_kd-ref=world_large_dpo"
    with pytest.raises(ComparisonError, match=r"report.baseline='ipo' names no arm of this sweep; its arms: dpo-ref=world_large_dpo, dpo_kd-ref"):
        match_arm("ipo", arms, "report.baseline")
    with pytest.raises(ComparisonError, match=r"report.primary='selective_dpo' matches 2 arms \(selective_dpo-r0.4-ref=world_large_dpo, selective_dpo-r0.4-ref=world_small_dpo\)"):
        match_arm("selective_dpo", arms, "report.primary")


def test_the_comparison_comes_from_the_jobs_report_node_or_the_command_line(compared_sweep):
    runs = load_runs(compared_sweep)
    comparison = comparison_of(runs)
    assert comparison.baseline == "dpo-ref=world_large_dpo"
    assert comparison.primary == ["selective_dpo-r0.4-ref=world_large_dpo", "selective_dpo_random-r0.4-ref=world_large_dpo"]
    assert comparison_of(runs, "distill_kd", []).baseline == "distill_kd-ref=world_large_dpo"
    with pytest.raises(ComparisonError, match="report.primary names the baseline arm dpo-ref=world_large_dpo itself"):
        comparison_of(runs, "dpo", ["dpo"])
    runs[0].baseline = "distill_kd"
    with pytest.raises(ComparisonError, match=r"the sweep's jobs set different report nodes .* pass --baseline and --primary"):
        comparison_of(runs)


# A hand-made sweep: DPO (the baseline), Selective-DPO and its random control (primary), distillation; three seeds.

PROMPTS = [("p0", "city"), ("p1", "city"), ("p2", "colour"), ("p3", "colour")]


def baseline_value(column, seed, i):
    if column == "reward":
        return -0.5 + 0.25 * ((seed + i) % 3)
    if column == "accuracy":
        return float((seed + i) % 2 == 0)
    return {"wrong": 0.5, "win": 0.5, "kl_to_start": 1.0}[column]


# arm -> column -> (seed, prompt index) -> value
ARM_VALUES = {
    "dpo": {},
    "selective_dpo": {
        "reward": lambda s, i: baseline_value("reward", s, i) + 0.5,  # +0.5 on every prompt of every seed: holds
        "accuracy": lambda s, i: 1.0 - baseline_value("accuracy", s, i) if (s, i) in ((0, 1), (1, 1)) else baseline_value("accuracy", s, i),  # +1 and -1
        "wrong": lambda s, i: 0.25, "kl_to_start": lambda s, i: 2.0,
    },
    "selective_dpo_random": {"reward": lambda s, i: baseline_value("reward", s, i) - 0.25},  # worse everywhere: reversed
    "distill_kd": {"reward": lambda s, i: baseline_value("reward", s, i) + 0.125},
}


def score_rows(arm, seed):
    rows = []
    for i, (prompt_id, kind) in enumerate(PROMPTS):
        value = {c: ARM_VALUES[arm].get(c, lambda s, j, c=c: baseline_value(c, s, j))(seed, i) for c in ("reward", "accuracy", "wrong", "win", "kl_to_start")}
        rows.append({
            "id": prompt_id, "kind": kind, "prompt": f"question {i}?", **{k: value[k] for k in ("reward", "win", "accuracy", "wrong")},
            "accuracy/city": value["accuracy"] if kind == "city" else None, "start_reward": -0.75, "start_accuracy": 0.0,
            "start_wrong": 0.5, "start_accuracy/city": 0.0 if kind == "city" else None, "kl_to_start": value["kl_to_start"],
        })
    return rows


CURVES = {  # arm -> per seed: (step, seconds, gold/mean_reward); the baseline ends at -0.25, 0, -0.5: target -0.25
    "dpo": [[(0, 0.0, -1.0), (10, 5.0, -0.5), (20, 10.0, -0.25)], [(0, 0.0, -1.0), (10, 5.0, -0.5), (20, 10.0, 0.0)],
            [(0, 0.0, -1.0), (10, 5.0, -0.75), (20, 10.0, -0.5)]],
    "selective_dpo": [[(0, 0.0, -1.0), (10, 4.0, -0.5), (20, 8.0, 0.0)], [(0, 0.0, -1.0), (10, 4.0, -0.25)],
                      [(0, 0.0, -1.0), (10, 4.0, -0.75), (20, 8.0, -0.5)]],
    "selective_dpo_random": [[(0, 0.0, -1.0), (10, 5.0, -0.5), (20, 10.0, -0.25)]] * 3,
}


@pytest.fixture
def compared_sweep(tmp_path):
    common = ["model=hub", "model.name_or_path=/m", "ref_model=hub", "ref_model.name_or_path=/r", "data=files", "data.path=/d", "benchmark=none",
              "report.baseline=dpo", "report.primary=[selective_dpo,selective_dpo_random]"]
    sweep, job = tmp_path / "sweep", 0
    for arm in ARM_VALUES:
        cfg = compose_train(*common, f"method={arm}", output_dir=tmp_path)
        for seed in (0, 1) if arm == "distill_kd" else (0, 1, 2):
            rows = score_rows(arm, seed)
            metrics = {"gold/mean_reward": float(np.mean([r["reward"] for r in rows])), "gold/kl_to_start": float(np.mean([r["kl_to_start"] for r in rows]))}
            config = OmegaConf.to_container(OmegaConf.merge(cfg, {"seed": seed}), resolve=True)
            write_job(sweep, job, {"method": arm, "ref_model": "world_large_dpo"}, config, metrics)
            write_jsonl(sweep / str(job) / "gold_scores.jsonl", rows)
            if arm in CURVES:
                points = CURVES[arm][seed]
                write_jsonl(sweep / str(job) / "curve.jsonl", [{"step": s, "seconds": t, "gold/mean_reward": v, "gold/kl_to_start": s / 10} for s, t, v in points])
            job += 1
    return sweep


def subsection(markdown: str, title: str) -> list[str]:
    """The table rows (header and separator left out) of the subsection ``### <title>``."""
    lines = markdown.split(f"### {title}\n", 1)[1].split("\n#", 1)[0].splitlines()
    return [line for line in lines if line.startswith("| ")][2:]


def test_report_gives_paired_intervals_holm_verdicts_and_the_figures(compared_sweep, capsys):
    main([str(compared_sweep)])
    markdown = (compared_sweep / "report.md").read_text()
    selective, control, distill = "selective_dpo-r0.4-ref=world_large_dpo", "selective_dpo_random-r0.4-ref=world_large_dpo", "distill_kd-ref=world_large_dpo"
    assert "Baseline arm: `dpo-ref=world_large_dpo`" in markdown and "10000 rounds" in markdown
    assert "Holm's step-down over the 4 tests" in markdown and "Few seeds (2 for some contrasts)" in markdown
    # Selective-DPO's accuracy differs by +1 (seed 0) and -1 (seed 1) on one prompt: an interval around 0.
    low, high = percentile_interval(bootstrap_means([[0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 0, 0]]))
    assert low < 0 < high
    accuracy_interval = f"[{low:+.3g}, {high:+.3g}]"
    # Holm over 4 tests: the two constant differences have p = 2 / 10001, adjusted 4 * p; the other two p = 1.
    assert subsection(markdown, "Primary contrasts: Holm-corrected verdicts") == [
        f"| {selective} | gold/mean_reward | +0.5 | [+0.5, +0.5] | 3 | 4 | 0.0002 | 0.0008 | holds |",
        f"| {selective} | gold/accuracy | +0 | {accuracy_interval} | 3 | 4 | 1 | 1 | not resolved |",
        f"| {control} | gold/mean_reward | -0.25 | [-0.25, -0.25] | 3 | 4 | 0.0002 | 0.0008 | reversed |",
        f"| {control} | gold/accuracy | +0 | [+0, +0] | 3 | 4 | 1 | 1 | not resolved |",
    ]
    rewards = subsection(markdown, "gold/mean_reward (higher is better)")
    assert rewards[0] == f"| {selective} (primary) | -0.25 | 0.25 | +0.5 | [+0.5, +0.5] | s0: +0.5, s1: +0.5, s2: +0.5 | 3 | 4 | 0.0002 |"
    # Distillation ran seeds 0 and 1 only: the baseline's mean over those, (-0.5 * 8 + 0.25 * (3 + 4)) / 8.
    assert rewards[2] == f"| {distill} | -0.2812 | -0.1562 | +0.125 | [+0.125, +0.125] | s0: +0.125, s1: +0.125 | 2 | 4 | 0.0002 |"
    # Lower is better for wrong answers and KL; a value that applies to some prompts pairs over those only.
    assert subsection(markdown, "gold/wrong (lower is better)")[0].startswith(f"| {selective} (primary) | 0.5 | 0.25 | -0.25 | [-0.25, -0.25] |")
    assert subsection(markdown, "gold/kl_to_start (lower is better)")[0].startswith(f"| {selective} (primary) | 1 | 2 | +1 |")
    assert subsection(markdown, "gold/accuracy/city (higher is better)")[0].endswith("| 3 | 2 | 1 |")
    assert "### gold/win_rate (higher is better)" in markdown and "### gold/no_value" not in markdown
    # Steps and seconds to reach the baseline's final gold mean reward, -0.25 (KL is a cost, not a target).
    assert subsection(markdown, "gold/mean_reward ≥ -0.25") == [
        "| dpo-ref=world_large_dpo | 2 of 3 | ≥ 18.33 (1 of 3 seeds did not reach) | ≥ 9.167 (1 of 3 seeds did not reach) | s0: 20, s1: 15, s2: not by 20 | s0: 10, s1: 7.5, s2: not by 10 |",
        f"| {selective} | 2 of 3 | ≥ 15 (1 of 3 seeds did not reach) | ≥ 6 (1 of 3 seeds did not reach) | s0: 15, s1: 10, s2: not by 20 | s0: 6, s1: 4, s2: not by 8 |",
        f"| {control} | 3 of 3 | 20 [20, 20] | 10 [10, 10] | s0: 20, s1: 20, s2: 20 | s0: 10, s1: 10, s2: 10 |",
    ]
    assert "### gold/kl_to_start ≤" not in markdown
    assert "(1) selective alignment reduces computational overhead; (2) stronger reference models improve token-selection accuracy; (3) Selective-DPO" in markdown
    for image in ("report.png", "report_forest.png", "report_frontier.png"):
        assert f"]({image})" in markdown and imread(compared_sweep / image).shape[2] in (3, 4)
    printed = capsys.readouterr().out
    assert "primary contrasts against dpo-ref=world_large_dpo" in printed
    # Not a terminal: each row on one line, no arm name wrapped mid-word.
    assert any(f"{selective} " in line and "holds" in line for line in printed.splitlines())
    assert any(f"{control} " in line and "reversed" in line for line in printed.splitlines())


def test_report_without_a_baseline_says_how_to_set_one(hand_made_sweep):
    main([str(hand_made_sweep)])
    markdown = (hand_made_sweep / "report.md").read_text()
    assert "No baseline arm is set: set `report.baseline` and `report.primary`" in markdown
    assert "The sweep's arms: selective_dpo-r0.2-ref=world_large_dpo, selective_dpo-r0.8-ref=world_large_dpo, dpo-ref=world_large_dpo." in markdown
    assert not (hand_made_sweep / "report_forest.png").exists()


def test_a_baseline_that_names_no_arm_is_an_error_after_the_rest_is_written(compared_sweep, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(compared_sweep), "--baseline", "ipo"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "report.baseline='ipo' names no arm of this sweep; its arms: dpo-ref=world_large_dpo, selective_dpo-r0.4-ref=world_large_dpo" in error
    markdown = (compared_sweep / "report.md").read_text()
    assert "**Not computed:** report.baseline='ipo' names no arm" in markdown and len(section(markdown, "Runs")) == 11


def test_command_line_names_the_baseline_and_primary_contrasts(compared_sweep):
    main([str(compared_sweep), "--baseline", "distill_kd", "--primary", "selective_dpo"])
    markdown = (compared_sweep / "report.md").read_text()
    rows = subsection(markdown, "Primary contrasts: Holm-corrected verdicts")
    assert "Holm's step-down over the 2 tests" in markdown
    # Paired on the two seeds distillation ran: +0.5 - 0.125 on every prompt.
    assert rows[0] == "| selective_dpo-r0.4-ref=world_large_dpo | gold/mean_reward | +0.375 | [+0.375, +0.375] | 2 | 4 | 0.0002 | 0.0004 | holds |"
    assert "No learning curves: no finished run of the baseline `distill_kd-ref=world_large_dpo` wrote `curve.jsonl`" in markdown


def test_two_finished_runs_of_one_arm_and_seed_cannot_be_paired(compared_sweep):
    shutil.copytree(compared_sweep / "0", compared_sweep / "99")
    with pytest.raises(ComparisonError, match=r"arm dpo-ref=world_large_dpo has two finished runs of seed 0 \(jobs 0 and 99\)"):
        write_report(compared_sweep)


def test_unreadable_curve_is_named_with_its_row(compared_sweep):
    (compared_sweep / "3" / "curve.jsonl").write_text('{"step": 0, "seconds": 0.0}\n{"step": 0, "seconds": 1.0}\n')
    with pytest.raises(ComparisonError, match=r"3/curve.jsonl, row 2: step 0 does not follow step 0"):
        write_report(compared_sweep)
    (compared_sweep / "3" / "curve.jsonl").write_text('{"step": 0, "seconds": 0.0}\n{"step": 10, "secon')
    with pytest.raises(ComparisonError, match=r"3/curve.jsonl, line 2: not JSON"):
        write_report(compared_sweep)


def test_runs_of_one_label_that_sweep_beta_are_separate_arms_on_the_frontier(compared_sweep):
    for job, beta in (("0", "0.05"), ("1", "0.05"), ("2", "0.05")):  # the DPO runs become a beta sweep: 0.05 and 0.1
        copy = compared_sweep / f"{job}b"
        shutil.copytree(compared_sweep / job, copy)
        config = OmegaConf.load(copy / "config.yaml")
        config.method.beta = float(beta)
        OmegaConf.save(config, copy / "config.yaml")
        (copy / "metrics.json").write_text(json.dumps({"gold/mean_reward": -0.5, "gold/kl_to_start": 3.0}))
    for job in ("0", "1", "2", "0b", "1b", "2b"):
        beta = "0.05" if job.endswith("b") else "0.1"
        OmegaConf.save(["method=dpo", f"method.beta={beta}", f"seed={job[0]}"], compared_sweep / job / ".hydra" / "overrides.yaml")
    runs = load_runs(compared_sweep)
    assert {r.arm for r in runs if r.method == "dpo"} == {"dpo-ref=world_large_dpo-method.beta=0.1", "dpo-ref=world_large_dpo-method.beta=0.05"}
    with pytest.raises(ComparisonError, match=r"report.baseline='dpo' matches 2 arms"):
        write_report(compared_sweep)
    main([str(compared_sweep), "--baseline", "dpo-method.beta=0.1"])
    rows = subsection((compared_sweep / "report.md").read_text(), "gold/mean_reward (higher is better)")
    assert [row for row in rows if row.startswith("| dpo-")] == [
        "| dpo-ref=world_large_dpo-method.beta=0.05 | -0.25 | -0.25 | +0 | [+0, +0] | s0: +0, s1: +0, s2: +0 | 3 | 4 | 1 |"]
    assert imread(compared_sweep / "report_frontier.png").shape[2] in (3, 4)


@pytest.mark.slow
def test_sweep_on_the_tiny_world_reports_paired_intervals_and_the_forest_plot(tiny_ladder, ladder_cache, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [
        "setting=world_tiny", "setting.world.seed=7", f"paths.cache_dir={ladder_cache}", f"paths.root_dir={tmp_path}", "logger=none",
        "trainer.max_steps=2", "data.train_pairs=16", "data.validation_pairs=8", "data.batch_size=4", "benchmark.n_prompts=6", "benchmark.max_new_tokens=8",
        "benchmark.every_n_steps=1", "benchmark.curve_prompts=4",  # learning curves: steps 0, 1, 2
        "method=dpo,selective_dpo", "seed=0,1", "report.baseline=dpo", "report.primary=[selective_dpo]", f"hydra.sweep.dir={sweep}",
    ]
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "selalign.train", "-m", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    runs = load_runs(sweep)
    assert [(r.status, r.arm, r.seed) for r in runs] == [
        ("ok", "dpo-ref=world_large_dpo", 0), ("ok", "dpo-ref=world_large_dpo", 1),
        ("ok", "selective_dpo-r0.4-ref=world_large_dpo", 0), ("ok", "selective_dpo-r0.4-ref=world_large_dpo", 1),
    ]
    # Each paired difference, computed here from the runs' per-prompt scores: the mean over seeds and prompts.
    markdown = (sweep / "report.md").read_text()
    for column, title in (("reward", "gold/mean_reward (higher is better)"), ("kl_to_start", "gold/kl_to_start (lower is better)")):
        values = {(r.arm, r.seed): {row["id"]: row[column] for row in map(json.loads, (r.job_dir / "gold_scores.jsonl").read_text().splitlines())} for r in runs}
        arm, baseline = "selective_dpo-r0.4-ref=world_large_dpo", "dpo-ref=world_large_dpo"
        per_seed = [np.mean([values[arm, s][i] - values[baseline, s][i] for i in values[baseline, s]]) for s in (0, 1)]
        [row] = subsection(markdown, title)
        cells = row.strip("| ").split(" | ")
        assert cells[0] == f"{arm} (primary)" and cells[3] == f"{np.mean(per_seed):+.3g}" and cells[6:8] == ["2", "6"]
        assert cells[5] == f"s0: {per_seed[0]:+.3g}, s1: {per_seed[1]:+.3g}"
        low, high = (float(x) for x in cells[4].strip("[]").split(", "))
        assert low <= float(cells[3]) <= high  # the bootstrap's replicates average to the point estimate: it lies inside
    # Holm over the two primary tests (mean reward, accuracy): the verdict follows the adjusted p-value and the sign.
    for row in subsection(markdown, "Primary contrasts: Holm-corrected verdicts"):
        cells = row.strip("| ").split(" | ")
        difference, holm_p, verdict_cell = float(cells[2]), float(cells[7]), cells[8]
        assert verdict_cell == ("not resolved" if holm_p > 0.05 else "holds" if difference > 0 else "reversed")
    assert imread(sweep / "report_forest.png").shape[2] in (3, 4) and imread(sweep / "report_frontier.png").shape[2] in (3, 4)
    # Steps to reach the baseline's final curve reward (the mean over its seeds): at least one baseline seed ends at or above it.
    finals = [json.loads((r.job_dir / "curve.jsonl").read_text().splitlines()[-1]) for r in runs[:2]]
    assert [f["step"] for f in finals] == [2, 2]
    target = np.mean([f["gold/mean_reward"] for f in finals])
    reach = subsection(markdown, f"gold/mean_reward ≥ {target:.4g}")
    assert [row.split(" | ")[0] for row in reach] == ["| dpo-ref=world_large_dpo", "| selective_dpo-r0.4-ref=world_large_dpo"]
    assert reach[0].split(" | ")[1] in ("1 of 2", "2 of 2")
    # The printed tables keep every arm's name on one line in a log (no mid-word wrapping).
    assert any("selective_dpo-r0.4-ref=world_large_dpo" in line and "gold/mean_reward" in line for line in result.stdout.splitlines())


def test_a_sweep_with_an_evaluation_job_names_it_by_the_model_it_evaluated(hand_made_sweep):
    trained = OmegaConf.load(hand_made_sweep / "0" / "config.yaml")
    evaluation = OmegaConf.masked_copy(trained, [k for k in trained if k != "method"])
    evaluation.model.name_or_path = "/folders/reference"
    write_job(hand_made_sweep, 7, {"model": "hub"}, evaluation, {"gold/win_rate": 0.9})
    runs = {run.name: run for run in load_runs(hand_made_sweep)}
    assert runs["evaluate=reference-s0"].method == "evaluate" and runs["evaluate=reference-s0"].ratio is None
