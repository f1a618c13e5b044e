"""The offline world study of docs/results/world_study.md: tuning, arms, beta sweep, then the verdicts.

    python scripts/world_study.py tune      # the tuning grid of A1, A3, A4 on validation questions (seed 0)
    python scripts/world_study.py main      # arms A1..A9 x 5 seeds at the tuned values, with learning curves
    python scripts/world_study.py sweep     # beta sweep of A1 and A4 at 2 seeds (reward-vs-KL frontier)
    python scripts/world_study.py extra     # secondary arms: the other objectives and label noise, as budget allows
    python scripts/world_study.py secondary # the secondary arms against A1 and their own contrasts: secondary.md + .json
    python scripts/world_study.py verdicts  # the failure criteria, evaluated: results.md + verdicts.json
    python scripts/world_study.py all       # tune, main, sweep, extra, verdicts

Every job is one ``python -m selalign.train`` run into ``<study dir>/<phase>/<job>/`` (a finished job, one with
``metrics.json``, is skipped, so the script resumes), ``--jobs`` at a time with one torch thread each. Each phase
ends with ``python -m selalign.report`` on its folder (report.md, forest and frontier plots). The protocol, the
arms and the criteria are those of docs/results/world_study.md; this file only carries them out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from selalign.report import holm, time_to_reach
from selalign.study import Job, curve, interval_text, read_metrics, run_jobs, scores, seed_bootstrap
from selalign.study import paired as paired_runs

SEEDS = (0, 1, 2, 3, 4)
SWEEP_SEEDS = (0, 1)
SWEEP_BETAS = (0.03, 0.1, 0.3, 1.0)
CURVE_EVERY, CURVE_PROMPTS = 50, 32
COMMON = ["setting=world", "logger=csv", f"benchmark.every_n_steps={CURVE_EVERY}", f"benchmark.curve_prompts={CURVE_PROMPTS}"]

# The arms (docs/results/world_study.md, "Arms"): overrides, and which tuned family their lr and beta come from.
ARMS: dict[str, tuple[list[str], str]] = {
    "A1": (["method=dpo", "ref_model=policy_init"], "dpo"),
    "A2": (["method=dpo", "ref_model=world_large_dpo"], "dpo"),
    "A3": (["method=distill_kd", "ref_model=world_large_dpo", "teacher_model=reference"], "distill"),
    "A4": (["method=selective_dpo", "ref_model=world_large_dpo"], "selective"),
    "A5": (["method=selective_dpo_random", "ref_model=world_large_dpo"], "selective"),
    "A6": (["method=selective_dpo", "ref_model=world_small_dpo"], "selective"),
    "A7": (["method=selective_dpo_oracle", "ref_model=world_large_dpo"], "selective"),
    "A8": (["method=selective_dpo", "ref_model=policy_init", "selector_model=world_large_dpo"], "selective"),
    "A9": (["method=selective_dpo", "ref_model=policy_init", "selector_model=world_small_dpo"], "selective"),
}
# The order the primary arms run in: those the failure criteria need first, then A6 and A7 (descriptive).
RUN_ORDER = ("A1", "A4", "A5", "A3", "A2", "A8", "A9", "A6", "A7")
DESCRIPTIVE = ("A6", "A7")
# Secondary arms (run after the primary ones, 5 seeds each, at A1's tuned lr and beta): the objectives of the
# comparison set, and DPO / Selective-DPO under 20% flipped train labels.
EXTRA_ARMS: dict[str, tuple[list[str], str]] = {
    "B1_ipo": (["method=ipo", "ref_model=world_large_dpo"], "dpo"),
    "B2_tdpo": (["method=tdpo", "ref_model=world_large_dpo"], "dpo"),
    "B3_tis_dpo": (["method=tis_dpo", "ref_model=world_large_dpo"], "dpo"),
    "B4_simpo": (["method=simpo"], "none"),
    "B5_sel_implicit": (["method=selective_dpo_implicit_reward", "ref_model=world_large_dpo"], "selective"),
    "N1_dpo_noise": (["method=dpo", "ref_model=policy_init", "setting.world.label_noise=0.2"], "dpo"),
    "N4_sel_noise": (["method=selective_dpo", "ref_model=world_large_dpo", "setting.world.label_noise=0.2"], "selective"),
}
# What each secondary arm is compared with besides A1: the implicit-reward scorer with the reference's gap scorer
# (A4, same anchor), Selective-DPO under flipped labels with itself on clean labels (A4) and with DPO under the same
# flipped labels (N1).
EXTRA_CONTRASTS = {"B5_sel_implicit": ("A4",), "N4_sel_noise": ("A4", "N1_dpo_noise")}
# The tuning grid: the same 6 cells for each tuned family, seed 0, scored on the validation questions.
LEARNING_RATES = (5.0e-5, 1.5e-4, 5.0e-4)
TUNED = {
    "dpo": ("A1", "method.beta", (0.1, 0.3)),
    "selective": ("A4", "method.beta", (0.1, 0.3)),
    "distill": ("A3", "method.kd_ratio", (0.5, 0.9)),
}
VALIDATION = ["benchmark.split=validation", "benchmark.n_prompts=80", "benchmark.every_n_steps=null", "benchmark.probe=false", "benchmark.kl_to_start=false"]


def tuning_jobs() -> list[Job]:
    jobs = []
    for family, (arm, key, values) in TUNED.items():
        for lr in LEARNING_RATES:
            for value in values:
                tuned = (f"optimizer.lr={lr}", f"{key}={value}")
                jobs.append(Job(f"{family}-lr{lr:g}-{key.split('.')[-1]}{value:g}", [*ARMS[arm][0], *tuned, "seed=0", *VALIDATION], tuned))
    return jobs


def choose_tuned(study: Path) -> dict[str, list[str]]:
    """The tuned overrides of each family: the grid cell with the highest validation accuracy (ties: mean reward)."""
    choice = {"none": []}
    for family in TUNED:
        cells = {}
        for job in tuning_jobs():
            if job.name.startswith(family + "-"):
                metrics = read_metrics(study / "tune" / job.name)
                if metrics is None:
                    raise SystemExit(f"the tuning run {job.name} has not finished ({study / 'tune' / job.name}); run `tune` first")
                cells[job.name] = (metrics["gold/accuracy"], metrics["gold/mean_reward"], list(job.tuned))
        best = max(cells, key=lambda name: cells[name][:2])
        choice[family] = cells[best][2]
    return choice


def selected(study: Path) -> dict[str, list[str]]:
    """The tuned overrides every later phase uses: ``<study>/selected.json``, which ``tune`` writes (``choose_tuned``).
    The study as published can be rerun from its choice by copying docs/results/world_study/selected.json there."""
    path = study / "selected.json"
    if not path.is_file():
        raise SystemExit(f"no tuned values at {path}: run `tune` (it writes them), or copy the published choice "
                         f"docs/results/world_study/selected.json there to rerun the study at its tuned values")
    choice = json.loads(path.read_text())
    missing = sorted({"none", *TUNED} - set(choice))
    if missing:
        raise SystemExit(f"{path} has no tuned values for {missing}; its families are {sorted(choice)}")
    return choice


def arm_jobs(study: Path, arms: dict[str, tuple[list[str], str]], seeds=SEEDS) -> list[Job]:
    tuned = selected(study)
    order = [arm for arm in RUN_ORDER if arm in arms] + [arm for arm in arms if arm not in RUN_ORDER]
    # Seed by seed over the arms the verdicts need, then seed by seed over the others: a study cut short leaves every
    # arm of a group with the same seeds.
    groups = [[arm for arm in order if arm not in DESCRIPTIVE], [arm for arm in order if arm in DESCRIPTIVE]]
    return [Job(f"{arm}-s{seed}", [*arms[arm][0], *tuned[arms[arm][1]], f"seed={seed}"]) for group in groups for seed in seeds for arm in group]


def sweep_jobs(study: Path) -> list[Job]:
    """A1 and A4 at every beta of the sweep but their tuned one, whose runs are the main runs of the same seeds (the same
    config, so the same run: ``sweep_points`` reads them from there). Seed by seed, so that a sweep cut short has every
    beta of both arms at its first seeds."""
    tuned, jobs = selected(study), []
    for seed in SWEEP_SEEDS:
        for arm in ("A1", "A4"):
            overrides, family = ARMS[arm]
            lr = [o for o in tuned[family] if o.startswith("optimizer.lr=")]
            for beta in SWEEP_BETAS:
                if f"method.beta={beta}" not in tuned[family]:
                    jobs.append(Job(f"{arm}-beta{beta:g}-s{seed}", [*overrides, *lr, f"method.beta={beta}", f"seed={seed}"]))
    return jobs


def sweep_points(study: Path) -> dict[str, list[dict]]:
    """Per arm of the sweep, per beta: mean final accuracy, reward and KL to the start over the sweep seeds whose runs
    of every beta of both arms finished (``seeds``)."""
    if not (study / "sweep").is_dir():
        return {}
    tuned = selected(study)

    def run_dir(arm: str, beta: float, seed: int) -> Path:
        main_run = f"method.beta={beta}" in tuned[ARMS[arm][1]]
        return study / "main" / f"{arm}-s{seed}" if main_run else study / "sweep" / f"{arm}-beta{beta:g}-s{seed}"

    seeds = [seed for seed in SWEEP_SEEDS if all(read_metrics(run_dir(arm, beta, seed)) for arm in ("A1", "A4") for beta in SWEEP_BETAS)]
    if not seeds:
        return {}
    points = {arm: [{"beta": beta, "seeds": seeds, **{m: statistics.fmean(read_metrics(run_dir(arm, beta, seed))[f"gold/{m}"] for seed in seeds)
                                                     for m in ("accuracy", "mean_reward", "kl_to_start", "no_value")}} for beta in SWEEP_BETAS]
              for arm in ("A1", "A4")}
    # A4 as the main study ran it (tuned beta) against DPO at each beta: would another beta than the tuning grid's have
    # closed the gap?
    for point in points["A1"]:
        other = run_dir("A1", point["beta"], seeds[0])
        point["A4_minus_this"] = paired_runs(study / "main", "A4", other.name.removesuffix(f"-s{seeds[0]}"), seeds, "accuracy", other_dir=other.parent)
    return points


def common(job: Job) -> list[str]:
    return COMMON


def report_arms(phase_dir: Path) -> list[str]:
    """The report's baseline (A1) and primary arm (A4) by their run labels, in the phase that runs both."""
    if phase_dir.name == "main":
        return ["--baseline", "dpo-ref=policy_init", "--primary", "selective_dpo-r0.4-ref=world_large_dpo"]
    return []


# ---------------------------------------------------------------------------------------------- verdicts


def paired(main: Path, arm: str, other: str, column: str = "accuracy") -> dict:
    """arm - other on a per-question score column over the study's seeds (``selalign.study.paired``)."""
    return paired_runs(main, arm, other, SEEDS, column)


def metric(main: Path, arm: str, name: str) -> list[float]:
    return [read_metrics(main / f"{arm}-s{seed}")[name] for seed in SEEDS]


def at_kl(points: list[dict], kl: float, name: str) -> float | None:
    """``name`` along a learning curve where its KL to the start equals ``kl`` (linear between the points that bracket it)."""
    previous = {"gold/kl_to_start": 0.0, name: None}
    for point in points:
        if point.get("gold/kl_to_start") is None or point.get(name) is None:
            continue
        if point["gold/kl_to_start"] >= kl and previous[name] is not None:
            x0, x1 = previous["gold/kl_to_start"], point["gold/kl_to_start"]
            return previous[name] + (kl - x0) / (x1 - x0) * (point[name] - previous[name]) if x1 > x0 else point[name]
        previous = point
    return None


def verdicts(study: Path) -> dict:
    main = study / "main"
    out: dict = {"seeds": list(SEEDS)}
    finished = [arm for arm in ARMS if all(read_metrics(main / f"{arm}-s{seed}") for seed in SEEDS)]
    out["finished_arms"] = finished
    accuracy = {arm: metric(main, arm, "gold/accuracy") for arm in finished}
    kl = {arm: metric(main, arm, "gold/kl_to_start") for arm in finished}
    out["arms"] = {arm: {"accuracy": statistics.fmean(accuracy[arm]), "accuracy_seed_sd": statistics.stdev(accuracy[arm]),
                         "kl_to_start": statistics.fmean(kl[arm]), "train_seconds": statistics.fmean(metric(main, arm, "time/train_seconds")),
                         **{f"{m}": statistics.fmean(metric(main, arm, f"gold/{m}")) for m in ("mean_reward", "wrong", "no_value", "probe/accuracy")}}
                   for arm in finished}

    # Primary family (Holm over three): A4 - A1, A4 - A3, A4 - A5 on expected accuracy.
    family = [paired(main, "A4", other) for other in ("A1", "A3", "A5")]
    for contrast, (adjusted, rejected) in zip(family, holm([c["p"] for c in family])):
        contrast["holm_p"], contrast["rejected"] = adjusted, rejected
    out["primary"] = family

    # Claim (3): A4 - the best of A1, A2, A3 (highest mean test accuracy), at matched KL.
    best = max(("A1", "A2", "A3"), key=lambda arm: out["arms"][arm]["accuracy"])
    claim3 = paired(main, "A4", best)
    kl_ratio = out["arms"]["A4"]["kl_to_start"] / max(out["arms"][best]["kl_to_start"], 1e-9)
    claim3 |= {"best_baseline": best, "kl_ratio": kl_ratio}
    if kl_ratio <= 1.25:
        claim3["matched_by"] = "final models (A4 spends at most 1.25x the baseline's KL to the start)"
        low = claim3["interval"][0]
    else:  # A4 spent more KL: read A4's curve where its KL equals the baseline's final KL, per seed
        differences = []
        for seed in SEEDS:
            base = curve(main / f"{best}-s{seed}")[-1]
            a4 = at_kl(curve(main / f"A4-s{seed}"), base["gold/kl_to_start"], "gold/accuracy")
            differences.append(None if a4 is None else a4 - base["gold/accuracy"])
        claim3["matched_by"] = "learning curves (A4's accuracy where its KL equals the baseline's final KL, curve prompts, per seed)"
        claim3["curve_differences"] = differences
        if None in differences:
            low = None
        else:
            claim3["curve_mean"], claim3["curve_interval"] = seed_bootstrap(differences)
            low = claim3["curve_interval"][0]
    claim3["verdict"] = "not resolved" if low is None else "holds" if low >= 0.03 else "fails"
    out["claim3"] = claim3

    # The mechanism: A4 - A5 (the Holm-corrected primary contrast).
    mechanism = family[2]
    out["mechanism"] = {"verdict": "holds" if mechanism["rejected"] and mechanism["side"] > 0 else "fails", **mechanism}

    # Claim (2): the anchor fixed at the policy's start, the selector varied: A8 (large DPO) - A9 (same-size DPO).
    auroc = {}
    for when, index in (("start", 0), ("middle", None), ("end", -1)):
        per_seed = []
        for seed in SEEDS:
            values = []
            for arm in ("A8", "A9"):
                points = [p for p in curve(main / f"{arm}-s{seed}") if p.get("selection/auroc") is not None]
                values.append(points[len(points) // 2 if index is None else index]["selection/auroc"])
            per_seed.append(values[0] - values[1])
        auroc[when] = dict(zip(("difference", "interval"), seed_bootstrap(per_seed))) | {"per_seed": per_seed}
    claim2_accuracy = paired(main, "A8", "A9")
    auroc_gain = auroc["end"]["interval"][0] > 0
    accuracy_gain = claim2_accuracy["interval"][0] > 0
    out["claim2"] = {"auroc": auroc, "accuracy": claim2_accuracy, "verdict": "holds" if auroc_gain and accuracy_gain else "fails" if not auroc_gain and not accuracy_gain else "partly holds",
                     "A4_minus_A6": paired(main, "A4", "A6") if "A6" in finished else None}

    # Claim (1): steps and wall-clock seconds for A4 to reach A1's final accuracy (mean over A1's seeds), per seed.
    target = statistics.fmean(curve(main / f"A1-s{seed}")[-1]["gold/accuracy"] for seed in SEEDS)
    reach = {}
    for arm in ("A1", "A4"):
        reach[arm] = [time_to_reach(curve(main / f"{arm}-s{seed}"), "gold/accuracy", target, 1) for seed in SEEDS]
    claim1 = {"target": target, "reach": reach}
    if any(r is None for r in reach["A4"]):
        claim1["verdict"] = "fails" if sum(r is None for r in reach["A4"]) > len(SEEDS) // 2 else "not resolved"
    else:
        a1 = [r if r is not None else (curve(main / f"A1-s{s}")[-1]["step"], curve(main / f"A1-s{s}")[-1]["seconds"]) for s, r in zip(SEEDS, reach["A1"])]
        steps = seed_bootstrap([a[0] - b[0] for a, b in zip(reach["A4"], a1)])
        seconds = seed_bootstrap([a[1] - b[1] for a, b in zip(reach["A4"], a1)])
        claim1 |= {"steps_difference": steps, "seconds_difference": seconds}
        claim1["verdict"] = ("holds" if steps[1][1] < 0 and seconds[1][1] < 0 else "fails" if steps[0] >= 0 or seconds[0] >= 0 else "not resolved")
    out["claim1"] = claim1

    # Did the world favour the method: A4's selection AUROC on format-rule pairs at the end of training.
    favoured = {}
    for rule in ("final_mark", "repeated_word", "value"):
        values = [metric_or_none(main / f"A4-s{seed}", f"val/selection/auroc/{rule}") for seed in SEEDS]
        favoured[rule] = statistics.fmean(values) if None not in values else None
    rule_aurocs = [favoured[r] for r in ("final_mark", "repeated_word") if favoured[r] is not None]
    near_half = bool(rule_aurocs) and all(0.4 <= v <= 0.6 for v in rule_aurocs)
    out["world_favoured"] = {"auroc_by_rule": favoured, "format_rule_auroc_near_half": near_half,
                             "verdict": "yes" if near_half and out["claim3"]["verdict"] == "holds" else "no"}
    # The oracle mask (A7): how far selection by the reference's log-prob gap is from selecting the decisive tokens.
    out["oracle"] = {"A7_minus_A4": paired(main, "A7", "A4")} if {"A4", "A7"} <= set(finished) else None
    out["secondary"] = secondary(study)
    out["sweep"] = sweep_points(study)
    return out


def secondary(study: Path) -> dict[str, dict]:
    """Per secondary arm with finished runs: its seeds, mean accuracy and KL to the start, and its paired differences
    (``contrasts``) from A1 and from the arms of ``EXTRA_CONTRASTS`` (main or secondary runs of the same seed), over
    the seeds it and the other arm both finished. Descriptive: no verdict."""
    out = {}
    finished = {arm: [seed for seed in SEEDS if read_metrics(study / "extra" / f"{arm}-s{seed}")] for arm in EXTRA_ARMS}
    for arm, seeds in finished.items():
        if not seeds:
            continue
        runs = {seed: read_metrics(study / "extra" / f"{arm}-s{seed}") for seed in seeds}
        out[arm] = {"seeds": seeds, "accuracy": statistics.fmean(runs[s]["gold/accuracy"] for s in seeds),
                    "no_value": statistics.fmean(runs[s]["gold/no_value"] for s in seeds),
                    "kl_to_start": statistics.fmean(runs[s]["gold/kl_to_start"] for s in seeds), "contrasts": {}}
        for other in ("A1", *EXTRA_CONTRASTS.get(arm, ())):
            other_dir = study / ("extra" if other in EXTRA_ARMS else "main")
            both = [seed for seed in seeds if read_metrics(other_dir / f"{other}-s{seed}")]
            if both:
                out[arm]["contrasts"][other] = paired_runs(study / "extra", arm, other, both, "accuracy", other_dir=other_dir)
    return out


def secondary_table(rows: dict[str, dict]) -> list[str]:
    """The secondary arms as markdown lines: one row per arm, its contrasts with A1 and with its ``EXTRA_CONTRASTS``."""
    lines = ["**Secondary arms** (descriptive, no verdicts; expected accuracy paired by seed and question over the seeds both arms "
             "finished):", "", "| arm | seeds | expected accuracy | no value | KL to start | − A1 [95% interval] | other contrasts |",
             "|---|---|---|---|---|---|---|"]
    for arm, row in rows.items():
        others = "; ".join(f"− {other}: " + (interval_text(row["contrasts"][other]) if other in row["contrasts"] else "not run")
                           for other in EXTRA_CONTRASTS.get(arm, ()))
        minus_a1 = interval_text(row["contrasts"]["A1"]) if "A1" in row["contrasts"] else "A1 not run"
        lines.append(f"| {arm} | {', '.join(map(str, row['seeds']))} | {100 * row['accuracy']:.1f}% | {100 * row['no_value']:.1f}% | "
                     f"{row['kl_to_start']:.2f} | {minus_a1} | {others} |")
    return lines


def figures(study: Path) -> None:
    """study_curves.png (expected accuracy on the curve questions against step and against wall-clock, mean over seeds)
    and study_breakdown.png (right / wrong / no value per arm, mean over seeds)."""
    from matplotlib.figure import Figure

    main = study / "main"
    figure = Figure(figsize=(11, 4))
    by_step, by_seconds = figure.subplots(1, 2)
    for arm in ARMS:
        curves = [curve(main / f"{arm}-s{seed}") for seed in SEEDS]
        curves = [c for c in curves if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [curves[0][i]["step"] for i in range(n)]
        seconds = [statistics.fmean(c[i]["seconds"] for c in curves) for i in range(n)]
        accuracy = [statistics.fmean(c[i]["gold/accuracy"] for c in curves) for i in range(n)]
        by_step.plot(steps, accuracy, marker=".", label=arm)
        by_seconds.plot(seconds, accuracy, marker=".", label=arm)
    by_step.set(xlabel="step", ylabel="expected accuracy (32 curve questions, K=4)")
    by_seconds.set(xlabel="wall-clock seconds (one thread)", ylabel="expected accuracy")
    by_step.legend(fontsize=7, ncols=3)
    figure.tight_layout()
    figure.savefig(study / "study_curves.png", dpi=120)

    figure = Figure(figsize=(8, 4))
    axes = figure.subplots()
    arms = [arm for arm in ARMS if all(read_metrics(main / f"{arm}-s{seed}") for seed in SEEDS)]
    start = read_metrics(main / "A1-s0")
    bottom = np.zeros(len(arms) + 1)
    for part, colour in (("accuracy", "tab:green"), ("wrong", "tab:red"), ("no_value", "tab:grey")):
        values = np.array([start[f"gold/start_{part}"], *(statistics.fmean(metric(main, arm, f"gold/{part}")) for arm in arms)])
        axes.bar(["start", *arms], values, bottom=bottom, color=colour, label={"accuracy": "right", "no_value": "states no value"}.get(part, part))
        bottom += values
    axes.set(ylabel="share of answers", title=f"240 test questions, K = 4 answers each, mean over {len(SEEDS)} seeds", ylim=(0, 1))
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(study / "study_breakdown.png", dpi=120)

    points = sweep_points(study)
    if points:  # the reward-vs-KL frontier across beta (final models, mean over the sweep seeds)
        figure = Figure(figsize=(10, 4))
        for axes, name, label in zip(figure.subplots(1, 2), ("accuracy", "mean_reward"), ("expected accuracy", "gold mean reward")):
            for arm, rows in points.items():
                axes.plot([r["kl_to_start"] for r in rows], [r[name] for r in rows], marker="o", label=arm)
                for r in rows:
                    axes.annotate(f"β={r['beta']:g}", (r["kl_to_start"], r[name]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            axes.set(xlabel="KL to the start", ylabel=label)
            axes.legend(fontsize=8)
        seeds = next(iter(points.values()))[0]["seeds"]
        figure.suptitle(f"β sweep, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: final models")
        figure.tight_layout()
        figure.savefig(study / "study_frontier.png", dpi=120)


def pct(value: float) -> str:
    return f"{100 * value:+.1f}" if value is not None else "n/a"


def render(study: Path, result: dict) -> str:
    """The results section of docs/results/world_study.md, from verdicts.json and the run folders."""
    main, lines = study / "main", []
    arms = result["finished_arms"]
    lines += ["| arm | expected accuracy | wrong | no value | mean reward | KL to start | probe accuracy | train seconds |",
              "|---|---|---|---|---|---|---|---|"]
    start = read_metrics(main / "A1-s0")
    lines.append(f"| start (`world_small`) | {100 * start['gold/start_accuracy']:.1f}% | {100 * start['gold/start_wrong']:.1f}% | "
                 f"{100 * start['gold/start_no_value']:.1f}% | {start['gold/start_mean_reward']:.3f} | 0 | {100 * start['gold/start_probe/accuracy']:.1f}% | |")
    for arm in arms:
        def cell(name, scale=100.0, digits=1, suffix="%"):
            values = [scale * v for v in metric(main, arm, name)]
            return f"{statistics.fmean(values):.{digits}f}{suffix} ± {statistics.stdev(values):.{digits}f}"
        lines.append(f"| {arm} | {cell('gold/accuracy')} | {cell('gold/wrong')} | {cell('gold/no_value')} | {cell('gold/mean_reward', 1, 3, '')} | "
                     f"{cell('gold/kl_to_start', 1, 2, '')} | {cell('gold/probe/accuracy')} | {cell('time/train_seconds', 1, 0, '')} |")
    lines += ["", f"Mean ± standard deviation over the {len(SEEDS)} seeds; 240 test questions, K = 4 answers each at temperature 1.", ""]
    lines += ["**Primary contrasts** (expected accuracy, paired by seed and question, crossed-bootstrap 95% interval, Holm over the three):", "",
              "| contrast | difference (accuracy points) [95% interval] | per seed | p | Holm p | 0 rejected |", "|---|---|---|---|---|---|"]
    for c in result["primary"]:
        lines.append(f"| {c['contrast']} | {interval_text(c)} | {', '.join(f'{100 * x:+.1f}' for x in c['per_seed'])} | {c['p']:.4f} | {c['holm_p']:.4f} | {'yes' if c['rejected'] else 'no'} |")
    c3, c2, c1, mech, fav = result["claim3"], result["claim2"], result["claim1"], result["mechanism"], result["world_favoured"]
    lines += ["", "**Verdicts** (the failure criteria of the protocol, in the paper's numbering):", ""]
    c1_text = (f"A4 − A1 to reach A1's final curve accuracy ({100 * c1['target']:.1f}%): "
               + (f"{c1['steps_difference'][0]:+.0f} steps [{c1['steps_difference'][1][0]:+.0f}, {c1['steps_difference'][1][1]:+.0f}], "
                  f"{c1['seconds_difference'][0]:+.0f} s [{c1['seconds_difference'][1][0]:+.0f}, {c1['seconds_difference'][1][1]:+.0f}]"
                  if "steps_difference" in c1 else "A4 does not reach it in every seed (" + "; ".join(
                      f"{arm}: " + ", ".join(f"seed {seed} " + ("not reached" if r is None else f"step {r[0]:.0f} ({r[1]:.0f} s)")
                                            for seed, r in zip(SEEDS, c1["reach"][arm])) for arm in ("A4", "A1")) + ")"))
    lines.append(f"1. **Claim (1), selection reduces computational overhead: {c1['verdict']}.** {c1_text}.")
    auroc = c2["auroc"]
    lines.append(f"2. **Claim (2), a stronger reference improves token-selection accuracy: {c2['verdict']}.** Anchor fixed at the policy's start, "
                 f"selector large − same-size (A8 − A9): selection AUROC at the end {auroc['end']['difference']:+.3f} "
                 f"[{auroc['end']['interval'][0]:+.3f}, {auroc['end']['interval'][1]:+.3f}] (start {auroc['start']['difference']:+.3f}, middle "
                 f"{auroc['middle']['difference']:+.3f}); expected accuracy {interval_text(c2['accuracy'])}."
                 + (f" The paper's own comparison, where the reference anchors and selects (A4 − A6): {interval_text(c2['A4_minus_A6'])}." if c2.get("A4_minus_A6") else ""))
    matched = (f"{interval_text(c3)}" if "curve_interval" not in c3 else
               f"{100 * c3['curve_mean']:+.1f} pts [{100 * c3['curve_interval'][0]:+.1f}, {100 * c3['curve_interval'][1]:+.1f}] on the curve questions")
    lines.append(f"3. **Claim (3), Selective-DPO beats DPO and distillation: {c3['verdict']}.** The best baseline is {c3['best_baseline']}; "
                 f"A4 − {c3['best_baseline']} at matched KL ({c3['matched_by']}; KL ratio {c3['kl_ratio']:.2f}): {matched}; the criterion asks for the "
                 f"interval's lower end at +3 points or more.")
    lines.append(f"- **The mechanism (A4 − A5, selected against random tokens): {mech['verdict']}.** {interval_text(mech)}, Holm p {mech['holm_p']:.4f}.")
    by_rule = ", ".join(f"{rule} {value:.3f}" for rule, value in fav["auroc_by_rule"].items() if value is not None)
    lines.append(f"- **Did the world favour the method: {fav['verdict']}.** A4's end-of-training selection AUROC by rule: {by_rule}.")
    if result.get("oracle"):
        lines.append(f"- **The oracle mask (A7, descriptive: the decisive tokens, the anchor as A4's) against A4:** "
                     f"{interval_text(result['oracle']['A7_minus_A4'])}.")
    if result.get("secondary"):
        lines += ["", *secondary_table(result["secondary"])]
    if result.get("sweep"):
        seeds = ", ".join(map(str, next(iter(result["sweep"].values()))[0]["seeds"]))
        lines += ["", f"**β sweep** (final models, mean over seeds {seeds}; the tuned β's points are the main runs of those seeds):", "",
                  "| arm | β | expected accuracy | no value | mean reward | KL to start | A4 (tuned β) − this arm, paired |", "|---|---|---|---|---|---|---|"]
        for arm, rows in result["sweep"].items():
            for r in rows:
                contrast = interval_text(r["A4_minus_this"]) if "A4_minus_this" in r else ""
                lines.append(f"| {arm} | {r['beta']:g} | {100 * r['accuracy']:.1f}% | {100 * r['no_value']:.1f}% | {r['mean_reward']:.3f} | "
                             f"{r['kl_to_start']:.2f} | {contrast} |")
    return "\n".join(lines) + "\n"


def metric_or_none(job_dir: Path, name: str) -> float | None:
    metrics = read_metrics(job_dir) or {}
    return metrics.get(name)


def only(arms: dict[str, tuple[list[str], str]], names: list[str] | None) -> dict[str, tuple[list[str], str]]:
    """The arms named (all when none are), in the study's order; an unknown name is an error that lists the known ones."""
    unknown = sorted(set(names or ()) - set(arms))
    if unknown:
        raise SystemExit(f"--arms: unknown arms {unknown} for this phase; its arms are {list(arms)}")
    return {name: value for name, value in arms.items() if not names or name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("tune", "main", "sweep", "extra", "secondary", "verdicts", "all"))
    parser.add_argument("--study-dir", type=Path, default=Path("outputs/world_study"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    parser.add_argument("--seeds", type=int, nargs="+", help="verdicts on these seeds only (a study cut short; a deviation to list)")
    parser.add_argument("--arms", nargs="+", help="main and extra: run only these arms (a study cut short; a deviation to list)")
    args = parser.parse_args()
    if args.seeds:
        global SEEDS
        SEEDS = tuple(args.seeds)
    study = args.study_dir
    phases = ("tune", "main", "sweep", "extra", "verdicts") if args.phase == "all" else (args.phase,)
    for phase in phases:
        if phase == "tune":
            run_jobs(study / "tune", tuning_jobs(), args.jobs, common, report_arms(study / "tune"))
            (study / "selected.json").write_text(json.dumps(choose_tuned(study), indent=2) + "\n")
        elif phase == "main":
            run_jobs(study / "main", arm_jobs(study, only(ARMS, args.arms)), args.jobs, common, report_arms(study / "main"))
        elif phase == "sweep":
            run_jobs(study / "sweep", sweep_jobs(study), args.jobs, common, report_arms(study / "sweep"))
        elif phase == "extra":
            run_jobs(study / "extra", arm_jobs(study, only(EXTRA_ARMS, args.arms)), args.jobs, common, report_arms(study / "extra"))
        elif phase == "secondary":
            rows = secondary(study)
            (study / "secondary.json").write_text(json.dumps(rows, indent=2) + "\n")
            (study / "secondary.md").write_text("\n".join(secondary_table(rows)) + "\n")
            print("\n".join(secondary_table(rows)))
        else:
            result = verdicts(study)
            figures(study)
            (study / "verdicts.json").write_text(json.dumps(result, indent=2) + "\n")
            (study / "results.md").write_text(render(study, result))
            print(json.dumps({k: v.get("verdict") for k, v in result.items() if isinstance(v, dict) and "verdict" in v}, indent=2))


if __name__ == "__main__":
    main()
