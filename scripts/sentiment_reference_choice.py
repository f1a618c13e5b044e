"""Choose the sentiment setting's DPO-tuned reference recipe before any comparison runs on it.

    python scripts/sentiment_reference_choice.py [--out docs/results/sentiment_reference_choice.md]

Each candidate recipe (training overrides of the reference, ``setting.reference``) trains a reference from
SmolLM2-135M-Instruct on the setting's pairs (the prepare step, cached), which then answers the 96 held-out prompts
greedily against the start under the gold evaluation. The rule, fixed before any method is compared: among the
recipes whose answers do not collapse (top opening share at most twice the start's, distinct bigrams at least 0.9 of
the start's), the one with the highest gold mean reward; if none qualifies, the one with the lowest top opening
share. Writes a table of every candidate and the choice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from selalign.benchmarks.base import EvalContext
from selalign.benchmarks.gold import GoldEvaluation
from selalign.models import load_causal_lm, load_tokenizer
from selalign.prepare import compose_train_config

BASE = ["experiment=smollm2_sentiment", "method=dpo", "data.batch_size=8", "trainer.max_epochs=1", "seed=0"]
RECIPES = {  # name -> the overrides that differ; every recipe trains LoRA r=16 for one epoch of the pairs
    "lr5e-4_beta0.1": ["optimizer.lr=5.0e-4", "method.beta=0.1"],
    "lr2e-4_beta0.1": ["optimizer.lr=2.0e-4", "method.beta=0.1"],
    "lr1e-4_beta0.1": ["optimizer.lr=1.0e-4", "method.beta=0.1"],
    "lr2e-4_beta0.3": ["optimizer.lr=2.0e-4", "method.beta=0.3"],
}
COLLAPSE_OPENING, COLLAPSE_DISTINCT = 2.0, 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/sentiment_reference_choice.md"))
    parser.add_argument("--run-dir", type=Path, default=Path("outputs/sentiment_reference_choice"))
    args = parser.parse_args()
    rows = {}
    for name, overrides in RECIPES.items():
        reference = [*BASE, *overrides]
        cfg = compose_train_config(["experiment=smollm2_sentiment", "setting.reference=[" + ",".join(f'"{o}"' for o in reference) + "]",
                                    f"paths.output_dir={args.run_dir / name}"])
        setting = hydra.utils.instantiate(cfg.setting, _convert_="all")
        started = time.perf_counter()
        setting.prepare(["dpo_reference"])
        build_seconds = time.perf_counter() - started
        folder, start = setting.path("dpo_reference"), setting.path("start_model")
        model_cfg = OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(folder)})
        start_cfg = OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(start)})
        evaluation = GoldEvaluation(setting, n_prompts=96, max_new_tokens=32, temperature=0.0, probe=False)
        run_dir = args.run_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = evaluation.evaluate(EvalContext(load_causal_lm(str(folder)), load_tokenizer(str(folder)), run_dir, model_cfg, None, start_cfg, None, 0))
        rows[name] = {"overrides": reference, "folder": str(folder), "build_seconds": round(build_seconds), **metrics}
        (run_dir / "metrics.json").write_text(json.dumps(rows[name], indent=2))
        print(name, {k: round(v, 3) for k, v in metrics.items() if k in ("gold/mean_reward", "gold/kl_to_start", "gold/distinct_2", "gold/top_opening_share")}, flush=True)

    start_opening = next(iter(rows.values()))["gold/start_top_opening_share"]
    start_distinct = next(iter(rows.values()))["gold/start_distinct_2"]
    fine = [n for n, r in rows.items() if r["gold/top_opening_share"] <= COLLAPSE_OPENING * start_opening and r["gold/distinct_2"] >= COLLAPSE_DISTINCT * start_distinct]
    chosen = max(fine, key=lambda n: rows[n]["gold/mean_reward"]) if fine else min(rows, key=lambda n: rows[n]["gold/top_opening_share"])
    lines = [
        "# The sentiment reference: which recipe, chosen before the comparison",
        "",
        f"Rule (fixed before the runs): among recipes with top opening share <= {COLLAPSE_OPENING} x the start's ({start_opening:.3f}) and "
        f"distinct bigrams >= {COLLAPSE_DISTINCT} x the start's ({start_distinct:.3f}), the highest gold mean reward. "
        "Each reference answers the 96 held-out prompts greedily; the start's mean reward is "
        f"{next(iter(rows.values()))['gold/start_mean_reward']:.3f}.",
        "",
        "| recipe | gold mean reward | win rate vs start | KL to start | distinct bigrams | top opening share | VADER (labeler) | qualifies | build s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['gold/mean_reward']:.3f} | {r['gold/win_rate']:.3f} | {r['gold/kl_to_start']:.2f} | {r['gold/distinct_2']:.3f} | "
                     f"{r['gold/top_opening_share']:.3f} | {r['gold/labeler']:.3f} | {'yes' if n in fine else 'no'} | {r['build_seconds']} |")
    lines += ["", f"Chosen: **{chosen}** (`setting.reference`: {' '.join(rows[chosen]['overrides'])}).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"chosen: {chosen}; wrote {args.out}")


if __name__ == "__main__":
    main()
