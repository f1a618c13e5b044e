"""The SmolLM2 sentiment study of docs/results/sentiment_study.md: reference choice, the 2 x 2 with random controls, beta sweep, verdicts.

    python scripts/sentiment_study.py reference  # four reference recipes built and answered greedily; the rule picks one
    python scripts/sentiment_study.py main       # P1..P6 x seeds 0, 1, 2 and the reference row R
    python scripts/sentiment_study.py sweep      # P2, P4 then P1 at beta 0.3, 1.0, 0.03 (seed 0), as budget allows
    python scripts/sentiment_study.py verdicts   # the criteria, evaluated: results.md, verdicts.json, figures
    python scripts/sentiment_study.py all        # all four

Every job runs into ``<study dir>/<phase>/<job>/`` (a job with ``metrics.json`` is finished and skipped, so the script
resumes), ``--jobs`` at a time with one torch thread each. The protocol, the arms and the criteria are those of
docs/results/sentiment_study.md; this file only carries them out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from selalign.report import holm
from selalign.study import JOB_ENV, Job, interval_text, paired, read_metrics, run_jobs

SEEDS = (0, 1, 2)
SWEEP_BETAS = (0.3, 1.0, 0.03)  # with the main runs' beta = 0.1 as the fourth point
SWEEP_ARMS = ("P2", "P4", "P1")
DEFAULT_BETA = 0.1
# Sampled answers (what makes KL to the start an estimate of the KL), one per prompt (deviation 1 of the protocol), 32 prompts
# per generate call (2.3x the tokens per second of the default 8 on this CPU).
EVALUATION = ["benchmark=gold", "benchmark.temperature=1.0", "benchmark.samples_per_prompt=1", "generator.batch_size=32"]

# The reference's candidate recipes (training overrides of the reference, ``setting.reference``): LoRA r=16, one epoch.
REFERENCE_BASE = ["experiment=smollm2_sentiment", "method=dpo", "data.batch_size=8", "trainer.max_epochs=1", "seed=0"]
RECIPES = {
    "lr5e-4_beta0.1": ["optimizer.lr=5.0e-4", "method.beta=0.1"],
    "lr2e-4_beta0.1": ["optimizer.lr=2.0e-4", "method.beta=0.1"],
    "lr1e-4_beta0.1": ["optimizer.lr=1.0e-4", "method.beta=0.1"],
    "lr2e-4_beta0.3": ["optimizer.lr=2.0e-4", "method.beta=0.3"],
}
COLLAPSE_OPENING, COLLAPSE_DISTINCT = 2.0, 0.9  # x the start's top opening share, x the start's distinct bigrams

ARMS = {
    "P1": ["method=dpo", "ref_model=policy_init"],
    "P2": ["method=dpo", "ref_model=smollm2_135m_dpo"],
    "P3": ["method=selective_dpo", "ref_model=policy_init"],
    "P4": ["method=selective_dpo", "ref_model=smollm2_135m_dpo"],
    "P5": ["method=selective_dpo_random", "ref_model=policy_init"],
    "P6": ["method=selective_dpo_random", "ref_model=smollm2_135m_dpo"],
}
PRIMARY = (("P4", "P2"), ("P3", "P1"), ("P4", "P6"))
COLUMNS = {"mean_reward": ("gold mean reward", 3), "win_rate": ("win rate vs start", 3), "labeler": ("VADER (labeler)", 3),
           "kl_to_start": ("KL to start", 2), "distinct_1": ("distinct-1", 3), "distinct_2": ("distinct-2", 3),
           "top_opening_share": ("top opening share", 3)}


# ---------------------------------------------------------------------------------------------- the reference


def reference_overrides(recipe: str) -> list[str]:
    return [*REFERENCE_BASE, *RECIPES[recipe]]


def setting_override(recipe: str) -> str:
    """The ``setting.reference`` override that makes ``ref_model=smollm2_135m_dpo`` the reference trained by ``recipe``."""
    return "setting.reference=[" + ",".join(f'"{o}"' for o in reference_overrides(recipe)) + "]"


def model_paths(recipe: str) -> tuple[Path, Path]:
    """(the reference folder of ``recipe``, the start model's folder), as the setting names them."""
    import hydra

    from selalign.prepare import compose_train_config

    cfg = compose_train_config(["experiment=smollm2_sentiment", setting_override(recipe)])
    setting = hydra.utils.instantiate(cfg.setting, _convert_="all")
    return setting.path("dpo_reference"), setting.path("start_model")


def evaluate_model(folder: Path, start: Path) -> list[str]:
    """Overrides of ``python -m selalign.evaluate`` that answer the held-out prompts with the model in ``folder``, against the start."""
    return ["setting=sentiment", "model=smollm2_135m", f"model.name_or_path={folder}",
            f"start_model={{_target_:selalign.models.load_causal_lm,name_or_path:'{start}'}}"]


def build_references(study: Path, parallel: int) -> None:
    """Train every candidate reference (``python -m selalign.prepare sentiment --only dpo_reference``), ``parallel`` at a time."""
    def build(recipe: str) -> tuple[str, int, float]:
        log_dir = study / "reference" / recipe
        log_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(log_dir / "build_log.txt", "w") as log:
            code = subprocess.run([sys.executable, "-m", "selalign.prepare", "sentiment", setting_override(recipe), "--only", "dpo_reference"],
                                  env={**os.environ, **JOB_ENV}, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        (log_dir / "build_seconds.txt").write_text(f"{seconds:.0f}\n")
        print(f"  reference {recipe}: {'built' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s", flush=True)
        return recipe, code, seconds

    todo = [r for r in RECIPES if not model_paths(r)[0].is_dir()]
    with ThreadPoolExecutor(parallel) as pool:
        failed = [r for r, code, _ in pool.map(build, todo) if code]
    if failed:
        raise SystemExit(f"reference builds failed: {failed} (see {study / 'reference'}/<recipe>/build_log.txt)")


def reference_jobs() -> list[Job]:
    """Each candidate reference answers the 96 held-out prompts greedily (the setting's own gold defaults)."""
    jobs = []
    for recipe in RECIPES:
        folder, start = model_paths(recipe)
        jobs.append(Job(recipe, ["benchmark=gold", *evaluate_model(folder, start)], entry="selalign.evaluate"))
    return jobs


def choose_reference(study: Path) -> dict:
    """The rule of the protocol, applied to the candidates' greedy answers; writes reference.json and reference.md."""
    rows = {}
    for recipe in RECIPES:
        metrics = read_metrics(study / "reference" / recipe)
        if metrics is None:
            raise SystemExit(f"the reference candidate {recipe} has no evaluation ({study / 'reference' / recipe}); run `reference` first")
        build = study / "reference" / recipe / "build_seconds.txt"
        rows[recipe] = metrics | {"build_seconds": float(build.read_text()) if build.exists() else None}
    any_row = next(iter(rows.values()))
    start_opening, start_distinct = any_row["gold/start_top_opening_share"], any_row["gold/start_distinct_2"]
    fine = [r for r, m in rows.items() if m["gold/top_opening_share"] <= COLLAPSE_OPENING * start_opening and m["gold/distinct_2"] >= COLLAPSE_DISTINCT * start_distinct]
    chosen = max(fine, key=lambda r: rows[r]["gold/mean_reward"]) if fine else min(rows, key=lambda r: rows[r]["gold/top_opening_share"])
    choice = {"chosen": chosen, "overrides": reference_overrides(chosen), "qualifying": fine, "rows": rows}
    (study / "reference.json").write_text(json.dumps(choice, indent=2) + "\n")
    lines = ["# The sentiment reference, chosen before the comparison", "",
             f"Rule (docs/results/sentiment_study.md): among recipes with top opening share ≤ {COLLAPSE_OPENING:g} × the start's "
             f"({start_opening:.3f}) and distinct bigrams ≥ {COLLAPSE_DISTINCT:g} × the start's ({start_distinct:.3f}), the highest gold mean "
             f"reward. Greedy answers to the 96 held-out prompts; the start's mean reward is {any_row['gold/start_mean_reward']:.3f}.", "",
             "| recipe | gold mean reward | win rate vs start | KL to start (greedy answers) | distinct-1 | distinct-2 | top opening share | VADER | qualifies | build s |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| start | {any_row['gold/start_mean_reward']:.3f} | 0.500 | 0 | {any_row['gold/start_distinct_1']:.3f} | {start_distinct:.3f} | {start_opening:.3f} | "
             f"{any_row.get('gold/start_labeler', float('nan')):.3f} | | |"]
    for r, m in rows.items():
        seconds = "" if m["build_seconds"] is None else f"{m['build_seconds']:.0f}"
        lines.append(f"| {r} | {m['gold/mean_reward']:.3f} | {m['gold/win_rate']:.3f} | {m['gold/kl_to_start']:.2f} | {m['gold/distinct_1']:.3f} | "
                     f"{m['gold/distinct_2']:.3f} | {m['gold/top_opening_share']:.3f} | {m['gold/labeler']:.3f} | {'yes' if r in fine else 'no'} | "
                     f"{seconds} |")
    lines += ["", f"Chosen: **{chosen}** (`setting.reference`: {' '.join(choice['overrides'])}).", ""]
    (study / "reference.md").write_text("\n".join(lines))
    print(f"reference chosen: {chosen}", flush=True)
    return choice


def chosen_reference(study: Path) -> str:
    path = study / "reference.json"
    if not path.exists():
        raise SystemExit(f"no reference chosen yet ({path}); run `reference` first")
    return json.loads(path.read_text())["chosen"]


# ---------------------------------------------------------------------------------------------- the arms


def common(job: Job) -> list[str]:
    return EVALUATION if job.entry == "selalign.evaluate" else ["experiment=smollm2_sentiment", *EVALUATION]


def main_jobs(study: Path) -> list[Job]:
    """P1..P6 then R at seed 0, then at seed 1, then 2: a study cut short leaves every arm with the same seeds."""
    recipe = chosen_reference(study)
    folder, start = model_paths(recipe)
    jobs = []
    for seed in SEEDS:
        jobs += [Job(f"{arm}-s{seed}", [*overrides, setting_override(recipe), f"seed={seed}"]) for arm, overrides in ARMS.items()]
        jobs.append(Job(f"R-s{seed}", [*evaluate_model(folder, start), f"seed={seed}"], entry="selalign.evaluate"))
    return jobs


def sweep_jobs(study: Path) -> list[Job]:
    recipe = chosen_reference(study)
    return [Job(f"{arm}-beta{beta:g}-s0", [*ARMS[arm], setting_override(recipe), f"method.beta={beta}", "seed=0"])
            for arm in SWEEP_ARMS for beta in SWEEP_BETAS]


# ---------------------------------------------------------------------------------------------- verdicts


def values(main: Path, arm: str, name: str) -> list[float]:
    return [read_metrics(main / f"{arm}-s{seed}")[name] for seed in SEEDS]


def finished(main: Path, arm: str) -> bool:
    return all(read_metrics(main / f"{arm}-s{seed}") for seed in SEEDS)


def sweep_points(study: Path) -> dict[str, list[dict]]:
    """Per swept arm: (beta, final metrics of seed 0) for every beta run, the main run of seed 0 at the default beta included."""
    points = {}
    for arm in SWEEP_ARMS:
        rows = []
        for beta in (DEFAULT_BETA, *SWEEP_BETAS):
            run = study / "main" / f"{arm}-s0" if beta == DEFAULT_BETA else study / "sweep" / f"{arm}-beta{beta:g}-s0"
            metrics = read_metrics(run)
            if metrics:
                rows.append({"beta": beta, **{name: metrics[f"gold/{name}"] for name in COLUMNS}})
        if len(rows) > 1:
            points[arm] = sorted(rows, key=lambda r: r["beta"])
    return points


def answers(job_dir: Path) -> list[str] | None:
    path = job_dir / "gold_generations.jsonl"
    return [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else None


def same_as_reference(main: Path, arm: str) -> float | None:
    """Share of the arm's answers identical to the reference's (R) at the same seed, so the same sampling seeds: how
    much of the reference an arm reproduces. None where a run wrote no answers."""
    shares = []
    for seed in SEEDS:
        mine, reference = answers(main / f"{arm}-s{seed}"), answers(main / f"R-s{seed}")
        if mine is None or reference is None:
            return None
        shares.append(sum(a == b for a, b in zip(mine, reference, strict=True)) / len(reference))
    return statistics.fmean(shares)


def verdicts(study: Path) -> dict:
    main = study / "main"
    arms = [arm for arm in [*ARMS, "R"] if finished(main, arm)]
    out: dict = {"seeds": list(SEEDS), "finished_arms": arms, "reference": chosen_reference(study)}
    start = read_metrics(main / "P1-s0")
    out["start"] = {name: start.get(f"gold/start_{name}") for name in COLUMNS}
    out["arms"] = {arm: {name: (statistics.fmean(values(main, arm, f"gold/{name}")), statistics.stdev(values(main, arm, f"gold/{name}")))
                         for name in COLUMNS if f"gold/{name}" in read_metrics(main / f"{arm}-s0")}
                   | ({"train_seconds": (statistics.fmean(values(main, arm, "time/train_seconds")), statistics.stdev(values(main, arm, "time/train_seconds")))}
                      if arm != "R" else {})
                   for arm in arms}
    out["same_as_reference"] = {arm: same_as_reference(main, arm) for arm in arms if arm != "R"} if "R" in arms else {}
    collapsed = {arm: bool(out["arms"][arm]["top_opening_share"][0] > COLLAPSE_OPENING * out["start"]["top_opening_share"]
                           or out["arms"][arm]["distinct_2"][0] < COLLAPSE_DISTINCT * out["start"]["distinct_2"]) for arm in arms}
    out["collapsed"] = collapsed

    family = [paired(main, a, b, SEEDS, "reward") for a, b in PRIMARY]
    for contrast, (adjusted, rejected) in zip(family, holm([c["p"] for c in family])):
        contrast["holm_p"], contrast["rejected"] = adjusted, rejected
    out["primary"] = family

    def beats(contrast: dict) -> dict:
        selective, dpo = contrast["contrast"].split(" - ")
        kl_ratio = out["arms"][selective]["kl_to_start"][0] / max(out["arms"][dpo]["kl_to_start"][0], 1e-9)
        wins = contrast["rejected"] and contrast["side"] > 0
        verdict = "fails" if not wins else "holds" if kl_ratio <= 1.25 else "not resolved"
        return {"contrast": contrast["contrast"], "kl_ratio": kl_ratio, "verdict": verdict, "collapsed": collapsed[selective]}

    out["beats_dpo"] = {"dpo_reference": beats(family[0]), "policy_start": beats(family[1])}
    out["mechanism"] = {"verdict": "holds" if family[2]["rejected"] and family[2]["side"] > 0 else "fails", "collapsed": collapsed["P4"]}
    total, reference_part, method_part = (paired(main, a, b, SEEDS, "reward") for a, b in (("P4", "P1"), ("P2", "P1"), ("P4", "P2")))
    mostly_reference = reference_part["interval"][0] > 0 and method_part["difference"] < 0.5 * total["difference"]
    out["split"] = {"total": total, "reference": reference_part, "method": method_part, "mostly_reference": mostly_reference}
    out["sweep"] = sweep_points(study)
    return out


def figures(study: Path, result: dict) -> None:
    """sentiment_frontier.png: gold reward and distinct bigrams against KL to the start, per arm (mean over seeds, with
    the beta sweep's seed-0 points where they exist)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    reward_axes, distinct_axes = figure.subplots(1, 2)
    for axes, name, label in ((reward_axes, "mean_reward", "gold mean reward (classifier)"), (distinct_axes, "distinct_2", "distinct bigrams")):
        axes.scatter([0], [result["start"][name]], marker="*", s=120, color="black", label="start")
        for arm, row in result["arms"].items():
            axes.errorbar(row["kl_to_start"][0], row[name][0], xerr=row["kl_to_start"][1], yerr=row[name][1], fmt="o", capsize=3, label=f"{arm} (3 seeds)")
        for arm, rows in result["sweep"].items():
            axes.plot([r["kl_to_start"] for r in rows], [r[name] for r in rows], linestyle="--", marker=".", alpha=0.6, label=f"{arm} β sweep (seed 0)")
            for r in rows:
                axes.annotate(f"{r['beta']:g}", (r["kl_to_start"], r[name]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        axes.set(xlabel="KL to the start", ylabel=label)
    reward_axes.legend(fontsize=6, ncols=2)
    figure.tight_layout()
    figure.savefig(study / "sentiment_frontier.png", dpi=120)


def render(study: Path, result: dict) -> str:
    """The results section of docs/results/sentiment_study.md."""
    header = ["arm", *(label for label, _ in COLUMNS.values()), "train seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| start (seed 0's answers) | " + " | ".join(f"{result['start'][n]:.{d}f}" if result["start"][n] is not None else ("0.500" if n == "win_rate" else "0")
                                          for n, (_, d) in COLUMNS.items()) + " | |")
    for arm, row in result["arms"].items():
        cells = [f"{row[n][0]:.{d}f} ± {row[n][1]:.{d}f}" if n in row else "" for n, (_, d) in COLUMNS.items()]
        seconds = f"{row['train_seconds'][0]:.0f} ± {row['train_seconds'][1]:.0f}" if "train_seconds" in row else ""
        lines.append(f"| {arm}{' (collapsed)' if result['collapsed'][arm] else ''} | " + " | ".join(cells) + f" | {seconds} |")
    lines += ["", f"Mean ± standard deviation over seeds {', '.join(map(str, SEEDS))}; 96 held-out prompts, one answer each sampled at temperature 1; "
              f"reference recipe `{result['reference']}`.", "",
              "**Primary contrasts** (gold mean reward, paired by seed and prompt, crossed-bootstrap 95% interval, Holm over the three):", "",
              "| contrast | difference [95% interval] | per seed | p | Holm p | 0 rejected |", "|---|---|---|---|---|---|"]
    for c in result["primary"]:
        lines.append(f"| {c['contrast']} | {interval_text(c, 1, '', 3)} | {', '.join(f'{x:+.3f}' for x in c['per_seed'])} | {c['p']:.4f} | {c['holm_p']:.4f} | "
                     f"{'yes' if c['rejected'] else 'no'} |")
    lines += ["", "**Verdicts** (the criteria of the protocol):", ""]
    for key, text in (("dpo_reference", "the DPO-tuned reference"), ("policy_start", "the policy's start as reference")):
        b = result["beats_dpo"][key]
        lines.append(f"- **Selective-DPO beats DPO with {text} ({b['contrast']}): {b['verdict']}** (KL ratio {b['kl_ratio']:.2f}"
                     f"{'; the Selective-DPO arm collapsed' if b['collapsed'] else ''}).")
    mechanism = result["mechanism"]
    lines.append(f"- **The mechanism (P4 − P6, selected against random tokens): {mechanism['verdict']}**"
                 f"{' (P4 collapsed)' if mechanism['collapsed'] else ''}.")
    split = result["split"]
    lines.append(f"- **The earlier release's comparison split** (P4 − P1 {interval_text(split['total'], 1, '', 3)}): the reference's part P2 − P1 "
                 f"{interval_text(split['reference'], 1, '', 3)}, the method's part P4 − P2 {interval_text(split['method'], 1, '', 3)}; "
                 f"mostly the reference: {'yes' if split['mostly_reference'] else 'no'}.")
    same = {arm: share for arm, share in result.get("same_as_reference", {}).items() if share is not None}
    if same:
        lines.append("- **Answers identical to the reference's** (R at the same seed, so the same sampling seeds): "
                     + ", ".join(f"{arm} {100 * share:.0f}%" for arm, share in same.items()) + ".")
    collapsed = [arm for arm, c in result["collapsed"].items() if c]
    lines.append(f"- **Collapse** (top opening share > {COLLAPSE_OPENING:g} × the start's or distinct bigrams < {COLLAPSE_DISTINCT:g} × the start's): "
                 + (", ".join(collapsed) if collapsed else "no arm") + ".")
    if result["sweep"]:
        lines += ["", "**β sweep** (seed 0; β = 0.1 is the main run of seed 0):", "",
                  "| arm | β | gold mean reward | KL to start | distinct-2 | top opening share |", "|---|---|---|---|---|---|"]
        for arm, rows in result["sweep"].items():
            for r in rows:
                lines.append(f"| {arm} | {r['beta']:g} | {r['mean_reward']:.3f} | {r['kl_to_start']:.2f} | {r['distinct_2']:.3f} | {r['top_opening_share']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("reference", "main", "sweep", "verdicts", "all"))
    parser.add_argument("--study-dir", type=Path, default=Path("outputs/sentiment_study"))
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time, one torch thread each")
    args = parser.parse_args()
    study = args.study_dir
    for phase in ("reference", "main", "sweep", "verdicts") if args.phase == "all" else (args.phase,):
        if phase == "reference":
            build_references(study, args.jobs)
            run_jobs(study / "reference", reference_jobs(), args.jobs, lambda job: [])
            choose_reference(study)
        elif phase == "main":
            run_jobs(study / "main", main_jobs(study), args.jobs, common)
        elif phase == "sweep":
            run_jobs(study / "sweep", sweep_jobs(study), args.jobs, common)
        else:
            result = verdicts(study)
            figures(study, result)
            (study / "verdicts.json").write_text(json.dumps(result, indent=2, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else v) + "\n")
            (study / "results.md").write_text(render(study, result))
            print(json.dumps({k: v.get("verdict") for k, v in result.items() if isinstance(v, dict) and "verdict" in v}
                             | {f"beats_dpo/{k}": v["verdict"] for k, v in result["beats_dpo"].items()}, indent=2))


if __name__ == "__main__":
    main()
