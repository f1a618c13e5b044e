"""scripts/sentiment_study.py: the reference rule and the criteria computed from run folders with planted effects."""

import json
from pathlib import Path

import numpy as np
import pytest

from support.scripts import load_script

study_script = load_script("sentiment_study")

PROMPTS = 96
START = {"mean_reward": 0.70, "win_rate": None, "labeler": 0.2, "kl_to_start": None, "distinct_1": 0.3, "distinct_2": 0.5, "top_opening_share": 0.1}


def write_run(job_dir: Path, rewards: np.ndarray, kl: float, opening: float = 0.1, distinct_2: float = 0.5) -> None:
    job_dir.mkdir(parents=True)
    metrics = {"gold/mean_reward": float(rewards.mean()), "gold/win_rate": 0.6, "gold/labeler": 0.3, "gold/kl_to_start": kl, "gold/distinct_1": 0.3,
               "gold/distinct_2": distinct_2, "gold/top_opening_share": opening, "time/train_seconds": 300.0,
               **{f"gold/start_{k}": v for k, v in START.items() if v is not None}}
    (job_dir / "metrics.json").write_text(json.dumps(metrics))
    (job_dir / "gold_scores.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "reward": float(r)}) + "\n" for i, r in enumerate(rewards)))


def planted_study(root: Path, levels: dict[str, float], kl: dict[str, float] | None = None, opening: dict[str, float] | None = None) -> Path:
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 0.1, PROMPTS)  # shared by every arm: what pairing by prompt removes
    (root / "reference.json").write_text(json.dumps({"chosen": "lr2e-4_beta0.1"}))
    for arm, level in levels.items():
        for seed in study_script.SEEDS:
            rewards = np.clip(level + prompt_effect + rng.normal(0, 0.01, PROMPTS), 0, 1)
            write_run(root / "main" / f"{arm}-s{seed}", rewards, (kl or {}).get(arm, 0.5), (opening or {}).get(arm, 0.1))
    return root


ARMS_TRAINED = ("P1", "P2", "P3", "P4", "P5", "P6")
LEVELS = {"P1": 0.60, "P2": 0.65, "P3": 0.60, "P4": 0.75, "P5": 0.60, "P6": 0.65, "R": 0.70}


def test_a_planted_method_effect_holds_and_a_null_one_fails(tmp_path):
    result = study_script.verdicts(planted_study(tmp_path, LEVELS))
    assert [c["contrast"] for c in result["primary"]] == ["P4 - P2", "P3 - P1", "P4 - P6"]
    p4_p2, p3_p1, p4_p6 = result["primary"]
    assert p4_p2["difference"] == pytest.approx(0.10, abs=0.005) and p4_p2["rejected"]
    assert abs(p3_p1["difference"]) < 0.005 and not p3_p1["rejected"]
    assert result["beats_dpo"]["dpo_reference"]["verdict"] == "holds"
    assert result["beats_dpo"]["policy_start"]["verdict"] == "fails"
    assert result["mechanism"]["verdict"] == "holds"
    # P4 - P1 = 0.15, of which the reference (P2 - P1) is 0.05: not mostly the reference
    split = result["split"]
    assert split["total"]["difference"] == pytest.approx(0.15, abs=0.005) and split["reference"]["difference"] == pytest.approx(0.05, abs=0.005)
    assert split["mostly_reference"] is False
    assert result["collapsed"] == {arm: False for arm in LEVELS}
    assert result["same_as_reference"] == {arm: None for arm in ARMS_TRAINED}  # the planted runs wrote no answers
    assert result["arms"]["R"]["mean_reward"][0] == pytest.approx(0.70 + 0.0, abs=0.03) and "train_seconds" not in result["arms"]["R"]
    text = study_script.render(tmp_path, result)
    assert "| P4 - P2 | +0.10" in text and "Selective-DPO beats DPO with the DPO-tuned reference (P4 - P2): holds" in text


def test_a_win_bought_with_kl_is_not_resolved_and_collapse_is_named(tmp_path):
    levels = LEVELS | {"P2": 0.70}  # the reference now explains most of P4 - P1
    result = study_script.verdicts(planted_study(tmp_path, levels, kl={"P4": 1.5, "P2": 0.5}, opening={"P4": 0.35}))
    assert result["beats_dpo"]["dpo_reference"]["kl_ratio"] == pytest.approx(3.0)
    assert result["beats_dpo"]["dpo_reference"]["verdict"] == "not resolved"
    assert result["collapsed"]["P4"] is True and result["beats_dpo"]["dpo_reference"]["collapsed"] is True
    assert result["split"]["mostly_reference"] is True
    assert "P4 (collapsed)" in study_script.render(tmp_path, result)


def reference_candidate(root: Path, recipe: str, reward: float, opening: float, distinct_2: float) -> None:
    write_run(root / "reference" / recipe, np.full(PROMPTS, reward), 2.0, opening, distinct_2)


def test_the_reference_rule_takes_the_best_recipe_that_does_not_collapse(tmp_path):
    # start: opening 0.1, distinct-2 0.5 -> a candidate qualifies with opening <= 0.2 and distinct-2 >= 0.45
    for recipe, (reward, opening, distinct) in zip(study_script.RECIPES, [(0.95, 0.8, 0.3), (0.85, 0.15, 0.46), (0.80, 0.1, 0.5), (0.90, 0.21, 0.5)]):
        reference_candidate(tmp_path, recipe, reward, opening, distinct)
    choice = study_script.choose_reference(tmp_path)
    assert choice["qualifying"] == ["lr2e-4_beta0.1", "lr1e-4_beta0.1"] and choice["chosen"] == "lr2e-4_beta0.1"
    assert json.loads((tmp_path / "reference.json").read_text())["overrides"][-2:] == ["optimizer.lr=2.0e-4", "method.beta=0.1"]
    assert "Chosen: **lr2e-4_beta0.1**" in (tmp_path / "reference.md").read_text()


def test_without_a_qualifying_recipe_the_least_collapsed_is_taken(tmp_path):
    for recipe, opening in zip(study_script.RECIPES, (0.9, 0.5, 0.3, 0.6)):
        reference_candidate(tmp_path, recipe, 0.9, opening, 0.5)
    assert study_script.choose_reference(tmp_path)["chosen"] == "lr1e-4_beta0.1"


def test_a_phase_needs_the_reference_chosen_first(tmp_path):
    with pytest.raises(SystemExit, match="no reference chosen yet"):
        study_script.chosen_reference(tmp_path)


def test_the_share_of_answers_identical_to_the_reference_is_counted_per_seed(tmp_path):
    study = planted_study(tmp_path, LEVELS)
    for seed in study_script.SEEDS:
        reference = [f"answer {i}" for i in range(4)]
        mine = reference[:seed + 1] + [f"other {i}" for i in range(3 - seed)]  # 1, 2, 3 of 4 the same
        for arm, texts in (("R", reference), ("P4", mine)):
            (study / "main" / f"{arm}-s{seed}" / "gold_generations.jsonl").write_text("".join(json.dumps({"answer": t}) + "\n" for t in texts))
    assert study_script.same_as_reference(study / "main", "P4") == pytest.approx((1 + 2 + 3) / 12)
    assert study_script.same_as_reference(study / "main", "P2") is None
    assert "P4 50%" in study_script.render(study, study_script.verdicts(study))
