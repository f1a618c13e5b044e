"""scripts/world_study.py: the failure criteria computed from run folders with planted effects, and the tuning choice."""

import json
from pathlib import Path

import numpy as np
import pytest

from support.scripts import load_script

study_script = load_script("world_study")

QUESTIONS = 60


def write_run(job_dir: Path, accuracy: np.ndarray, kl: float, auroc: float, seconds_per_step: float, extra: dict | None = None) -> None:
    """A finished run: per-question accuracies, metrics, and a learning curve rising linearly to its final values."""
    job_dir.mkdir(parents=True)
    final = float(accuracy.mean())
    metrics = {"gold/accuracy": final, "gold/kl_to_start": kl, "time/train_seconds": 250 * seconds_per_step, "gold/mean_reward": final - 0.6,
               "gold/wrong": 0.8 - final, "gold/no_value": 0.2, "gold/probe/accuracy": 0.6,
               "gold/start_accuracy": 0.1, "gold/start_wrong": 0.7, "gold/start_no_value": 0.2, "gold/start_mean_reward": -0.65,
               "gold/start_probe/accuracy": 0.6, **(extra or {})}
    (job_dir / "metrics.json").write_text(json.dumps(metrics))
    (job_dir / "gold_scores.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "accuracy": float(a)}) + "\n" for i, a in enumerate(accuracy)))
    points = [{"step": step, "seconds": step * seconds_per_step, "gold/accuracy": 0.1 + (final - 0.1) * step / 250, "gold/kl_to_start": kl * step / 250,
               "selection/auroc": auroc} for step in range(0, 251, 50)]
    (job_dir / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))


def planted_study(root: Path, levels: dict[str, float], kl: dict[str, float] | None = None, auroc: dict[str, float] | None = None) -> Path:
    rng = np.random.default_rng(0)
    question_effect = rng.normal(0, 0.05, QUESTIONS)  # shared by every arm: what pairing by question removes
    for arm in study_script.ARMS:
        for seed in study_script.SEEDS:
            accuracy = np.clip(levels[arm] + question_effect + rng.normal(0, 0.01, QUESTIONS), 0, 1)
            write_run(root / "main" / f"{arm}-s{seed}", accuracy, (kl or {}).get(arm, 0.5), (auroc or {}).get(arm, 0.7), 1.0,
                      {"val/selection/auroc/final_mark": 0.5, "val/selection/auroc/repeated_word": 0.55, "val/selection/auroc/value": 0.8})
    return root


LEVELS = {"A1": 0.12, "A2": 0.13, "A3": 0.15, "A4": 0.25, "A5": 0.14, "A6": 0.18, "A7": 0.3, "A8": 0.2, "A9": 0.15}


def test_a_large_planted_win_holds_on_every_criterion(tmp_path):
    study = planted_study(tmp_path, LEVELS, auroc={"A8": 0.8, "A9": 0.7})
    result = study_script.verdicts(study)
    assert result["claim3"]["best_baseline"] == "A3" and result["claim3"]["verdict"] == "holds"
    assert result["claim3"]["difference"] == pytest.approx(0.10, abs=0.01)
    low, high = result["claim3"]["interval"]
    assert 0.03 < low < 0.10 < high
    assert [c["contrast"] for c in result["primary"]] == ["A4 - A1", "A4 - A3", "A4 - A5"] and all(c["rejected"] for c in result["primary"])
    assert result["mechanism"]["verdict"] == "holds"
    assert result["claim2"]["verdict"] == "holds" and result["claim2"]["auroc"]["end"]["difference"] == pytest.approx(0.1)
    # A4 rises faster at the same cost per step: it reaches A1's final accuracy (0.12) at a fifth of A1's steps or so.
    assert result["claim1"]["verdict"] == "holds" and result["claim1"]["steps_difference"][0] < -150
    # format-rule AUROC 0.5 and 0.55 while A4 wins: the world favoured the method
    assert result["world_favoured"]["verdict"] == "yes"
    # the descriptive arms: A4 - A6 beside claim (2), the oracle mask A7 - A4
    assert result["claim2"]["A4_minus_A6"]["difference"] == pytest.approx(0.07, abs=0.01)
    assert result["oracle"]["A7_minus_A4"]["difference"] == pytest.approx(0.05, abs=0.01)
    text = study_script.render(study, result)
    assert "\n| A4 | 2" in text and "\n| A7 | 3" in text
    assert f"(A4 − A6): {study_script.interval_text(result['claim2']['A4_minus_A6'])}." in text
    assert f"against A4:** {study_script.interval_text(result['oracle']['A7_minus_A4'])}." in text


def test_a_win_smaller_than_three_points_or_a_tie_with_random_fails(tmp_path):
    levels = LEVELS | {"A3": 0.24, "A5": 0.25}
    result = study_script.verdicts(planted_study(tmp_path, levels))
    assert result["claim3"]["verdict"] == "fails" and result["claim3"]["interval"][0] < 0.03
    assert result["mechanism"]["verdict"] == "fails" and not result["primary"][2]["rejected"]
    assert result["claim2"]["verdict"] == "partly holds"  # accuracy gains, AUROC equal
    assert result["world_favoured"]["verdict"] == "no"


def test_a4_that_misses_a1s_final_accuracy_in_one_seed_leaves_claim_1_unresolved_and_says_where(tmp_path):
    study = planted_study(tmp_path, LEVELS)
    flat = [{"step": step, "seconds": float(step), "gold/accuracy": 0.05, "gold/kl_to_start": 0.1, "selection/auroc": 0.7} for step in range(0, 251, 50)]
    (study / "main" / "A4-s1" / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in flat))
    result = study_script.verdicts(study)
    assert result["claim1"]["verdict"] == "not resolved" and result["claim1"]["reach"]["A4"][1] is None
    text = study_script.render(study, result)
    # the planted curves rise linearly from 0.1 to the run's final accuracy over 250 steps (1 s per step)
    target = result["claim1"]["target"]
    step = {seed: 250 * (target - 0.1) / (study_script.read_metrics(study / "main" / f"A4-s{seed}")["gold/accuracy"] - 0.1) for seed in (0, 2)}
    assert f"A4 does not reach it in every seed (A4: seed 0 step {step[0]:.0f} ({step[0]:.0f} s), seed 1 not reached, seed 2 step {step[2]:.0f} " in text
    assert "; A1: seed 0 " in text


def test_a4_spending_more_kl_is_compared_on_its_curve_where_its_kl_matches(tmp_path):
    result = study_script.verdicts(planted_study(tmp_path, LEVELS, kl={"A4": 1.0}))
    claim3 = result["claim3"]
    assert claim3["kl_ratio"] == pytest.approx(2.0) and claim3["matched_by"].startswith("learning curves")
    # A4's curve reaches the baseline's KL (0.5) half-way: accuracy 0.1 + (A4 - 0.1) / 2, against A3's final curve value
    expected = [0.1 + (study_script.read_metrics(tmp_path / "main" / f"A4-s{s}")["gold/accuracy"] - 0.1) / 2
                - study_script.read_metrics(tmp_path / "main" / f"A3-s{s}")["gold/accuracy"] for s in study_script.SEEDS]
    assert claim3["curve_differences"] == pytest.approx(expected)
    assert claim3["verdict"] == "fails"  # about -0.075 at matched KL


def test_tuning_picks_the_cell_with_the_best_validation_accuracy(tmp_path):
    for job in study_script.tuning_jobs():
        accuracy = 0.3 if job.name == "dpo-lr0.0005-beta0.3" else 0.2 if job.name.startswith("distill-lr5e-05") else 0.1
        reward = 0.5 if job.name == "distill-lr5e-05-kd_ratio0.9" else 0.0  # breaks the distillation tie
        (tmp_path / "tune" / job.name).mkdir(parents=True)
        (tmp_path / "tune" / job.name / "metrics.json").write_text(json.dumps({"gold/accuracy": accuracy, "gold/mean_reward": reward}))
    chosen = study_script.choose_tuned(tmp_path)
    assert chosen["dpo"] == ["optimizer.lr=0.0005", "method.beta=0.3"]
    assert chosen["distill"] == ["optimizer.lr=5e-05", "method.kd_ratio=0.9"]
    (tmp_path / "selected.json").write_text(json.dumps(chosen))  # what `tune` writes
    jobs = {job.name: job.overrides for job in study_script.arm_jobs(tmp_path, study_script.ARMS)}
    assert jobs["A2-s3"] == ["method=dpo", "ref_model=world_large_dpo", "optimizer.lr=0.0005", "method.beta=0.3", "seed=3"]
    core = ["A1", "A4", "A5", "A3", "A2", "A8", "A9"]  # seed by seed, then A6 and A7 seed by seed
    assert list(jobs) == [f"{arm}-s{s}" for s in study_script.SEEDS for arm in core] + [f"{arm}-s{s}" for s in study_script.SEEDS for arm in ("A6", "A7")]


def test_an_unfinished_tuning_run_is_named(tmp_path):
    with pytest.raises(SystemExit, match="the tuning run dpo-lr5e-05-beta0.1 has not finished"):
        study_script.choose_tuned(tmp_path)


def test_later_phases_read_the_tuned_values_from_selected_json_and_say_how_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match=r"no tuned values at .*selected.json: run `tune` .* docs/results/world_study/selected.json"):
        study_script.arm_jobs(tmp_path, study_script.ARMS)
    published = json.loads((Path(__file__).parents[1] / "docs/results/world_study/selected.json").read_text())
    (tmp_path / "selected.json").write_text(json.dumps(published))
    jobs = {job.name: job.overrides for job in study_script.arm_jobs(tmp_path, study_script.EXTRA_ARMS)}
    assert jobs["N4_sel_noise-s2"] == ["method=selective_dpo", "ref_model=world_large_dpo", "setting.world.label_noise=0.2",
                                       *published["selective"], "seed=2"]
    assert jobs["B4_simpo-s0"] == ["method=simpo", "seed=0"]  # SimPO is tuned by nothing: its own defaults
    (tmp_path / "selected.json").write_text(json.dumps({"none": [], "dpo": []}))
    with pytest.raises(SystemExit, match=r"has no tuned values for \['distill', 'selective'\]"):
        study_script.selected(tmp_path)


def test_the_beta_sweep_reuses_the_main_runs_at_the_tuned_beta_and_reports_finished_seeds(tmp_path):
    for job in study_script.tuning_jobs():  # every family tuned to its first cell: lr 5e-5, beta 0.1 (kd_ratio 0.5)
        accuracy = 0.2 if job.name.endswith(("lr5e-05-beta0.1", "lr5e-05-kd_ratio0.5")) else 0.1
        (tmp_path / "tune" / job.name).mkdir(parents=True)
        (tmp_path / "tune" / job.name / "metrics.json").write_text(json.dumps({"gold/accuracy": accuracy, "gold/mean_reward": 0.0}))
    (tmp_path / "selected.json").write_text(json.dumps(study_script.choose_tuned(tmp_path)))
    jobs = study_script.sweep_jobs(tmp_path)
    others = [b for b in study_script.SWEEP_BETAS if b != 0.1]
    assert [j.name for j in jobs] == [f"{arm}-beta{b:g}-s{s}" for s in study_script.SWEEP_SEEDS for arm in ("A1", "A4") for b in others]
    assert jobs[0].overrides[-3:] == ["optimizer.lr=5e-05", f"method.beta={others[0]}", "seed=0"]
    assert study_script.sweep_points(tmp_path) == {}  # no sweep run yet
    rng = np.random.default_rng(0)
    for arm in ("A1", "A4"):  # seed 0 complete, seed 1 missing one run
        for beta in study_script.SWEEP_BETAS:
            folder = tmp_path / ("main" / Path(f"{arm}-s0") if beta == 0.1 else "sweep" / Path(f"{arm}-beta{beta:g}-s0"))
            write_run(folder, np.full(QUESTIONS, beta / 10), kl=beta, auroc=0.7, seconds_per_step=1.0)
        write_run(tmp_path / "sweep" / f"{arm}-beta0.03-s1", rng.random(QUESTIONS), kl=9.0, auroc=0.7, seconds_per_step=1.0)
    points = study_script.sweep_points(tmp_path)
    assert [p["beta"] for p in points["A4"]] == list(study_script.SWEEP_BETAS)
    assert all(p["seeds"] == [0] for p in points["A1"] + points["A4"])
    assert [p["accuracy"] for p in points["A1"]] == pytest.approx([b / 10 for b in study_script.SWEEP_BETAS])
    assert [p["kl_to_start"] for p in points["A1"]] == pytest.approx(list(study_script.SWEEP_BETAS))
    # A4 at its tuned beta (0.1: accuracy 0.01 on every question) against A1 at each beta, paired over seed 0
    assert [p["A4_minus_this"]["difference"] for p in points["A1"]] == pytest.approx([0.01 - b / 10 for b in study_script.SWEEP_BETAS])
    assert all(p["A4_minus_this"]["per_seed"] == pytest.approx([0.01 - p["beta"] / 10]) for p in points["A1"])


def test_a_phase_can_run_some_arms_and_names_an_unknown_one():
    assert list(study_script.only(study_script.ARMS, ["A7", "A6"])) == ["A6", "A7"]
    assert study_script.only(study_script.ARMS, None) == study_script.ARMS
    with pytest.raises(SystemExit, match=r"unknown arms \['A10'\]"):
        study_script.only(study_script.ARMS, ["A6", "A10"])


def test_a_secondary_arm_is_paired_with_a1_over_the_seeds_it_finished(tmp_path):
    study = planted_study(tmp_path, LEVELS)
    a1 = {seed: np.array([json.loads(line)["accuracy"] for line in (study / "main" / f"A1-s{seed}" / "gold_scores.jsonl").read_text().splitlines()])
          for seed in (0, 1)}
    for seed in (0, 1):  # IPO finished at seeds 0 and 1 only: A1's accuracy plus 0.02 on every question
        write_run(study / "extra" / f"B1_ipo-s{seed}", a1[seed] + 0.02, kl=0.8, auroc=0.7, seconds_per_step=1.0)
    secondary = study_script.secondary(study)
    assert list(secondary) == ["B1_ipo"] and secondary["B1_ipo"]["seeds"] == [0, 1]
    assert list(secondary["B1_ipo"]["contrasts"]) == ["A1"]
    contrast = secondary["B1_ipo"]["contrasts"]["A1"]
    assert contrast["difference"] == pytest.approx(0.02) and contrast["interval"] == pytest.approx((0.02, 0.02))
    assert secondary["B1_ipo"]["kl_to_start"] == pytest.approx(0.8)
    assert "| B1_ipo | 0, 1 | " in study_script.render(study, study_script.verdicts(study))


def test_selective_dpo_under_label_noise_is_paired_with_itself_on_clean_labels_and_with_noisy_dpo(tmp_path):
    main = tmp_path / "main"
    rng = np.random.default_rng(1)
    clean = {arm: {seed: rng.random(QUESTIONS) for seed in study_script.SEEDS} for arm in ("A1", "A4")}
    for arm, runs in clean.items():
        for seed, accuracy in runs.items():
            write_run(main / f"{arm}-s{seed}", accuracy, kl=0.5, auroc=0.7, seconds_per_step=1.0)
    for seed in (0, 1, 2):  # noisy DPO loses 0.05 on every question; noisy Selective-DPO 0.01, and only seeds 0, 1 ran
        write_run(tmp_path / "extra" / f"N1_dpo_noise-s{seed}", clean["A1"][seed] - 0.05, kl=0.4, auroc=0.7, seconds_per_step=1.0)
    for seed in (0, 1):
        write_run(tmp_path / "extra" / f"N4_sel_noise-s{seed}", clean["A4"][seed] - 0.01, kl=0.4, auroc=0.7, seconds_per_step=1.0)
    rows = study_script.secondary(tmp_path)
    assert list(rows) == ["N1_dpo_noise", "N4_sel_noise"] and rows["N1_dpo_noise"]["seeds"] == [0, 1, 2]
    assert rows["N1_dpo_noise"]["contrasts"]["A1"]["difference"] == pytest.approx(-0.05)
    n4 = rows["N4_sel_noise"]["contrasts"]
    assert list(n4) == ["A1", "A4", "N1_dpo_noise"]
    assert n4["A4"]["difference"] == pytest.approx(-0.01) and n4["A4"]["per_seed"] == pytest.approx([-0.01, -0.01])
    expected = np.mean([(clean["A4"][s] - 0.01) - (clean["A1"][s] - 0.05) for s in (0, 1)])
    assert n4["N1_dpo_noise"]["difference"] == pytest.approx(expected) and n4["N1_dpo_noise"]["per_seed"] == pytest.approx(
        [np.mean(clean["A4"][s] - clean["A1"][s] + 0.04) for s in (0, 1)])
    table = "\n".join(study_script.secondary_table(rows))
    assert "| N4_sel_noise | 0, 1 | " in table and f"− A4: {study_script.interval_text(n4['A4'])}; − N1_dpo_noise: " in table
    # a partner arm that has not run is said to be missing, not left out
    without_a4 = {"N4_sel_noise": rows["N4_sel_noise"] | {"contrasts": {k: v for k, v in n4.items() if k != "A4"}}}
    assert "| − A4: not run; − N1_dpo_noise: " in "\n".join(study_script.secondary_table(without_a4))
