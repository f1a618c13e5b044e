"""The evaluation entry point and its configs: one CLI run, reruns in new run dirs, the judge checked first, preference accuracy by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
import os
import subprocess
import sys

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from support.configs import REPO, tiny_overrides
from support.tiny import build_model, build_tokenizer
from selalign.benchmarks import EvalContext
from selalign.benchmarks.pref_accuracy import PrefAccuracy
from selalign.evaluate import evaluate
from selalign.models import load_causal_lm, load_tokenizer
from selalign.refcache import compute_logps
from selalign.judges import JudgeRequestError, JudgeUnavailableError
from support.stub_server import StubChatServer, benchmark_verdict, echo_reply

PLANTED_KEY = "sk-live-planted-eval-5e4d3c2b1a09"
KEY_ENV = "SELALIGN_TEST_JUDGE_KEY"
JUDGE_CONFIGS = sorted(path.stem for path in (REPO / "conf" / "judge").glob("*.yaml"))
GENERATOR_CONFIGS = sorted(path.stem for path in (REPO / "conf" / "generator").glob("*.yaml"))
FAKE_SERVE = f"[{sys.executable},{REPO / 'tests' / 'support' / 'stub_server.py'}]"
BENCHMARK_CONFIGS = ["mt_bench", "arena_hard", "alpaca_eval", "pref_accuracy"]


def compose_evaluate(*overrides: str, output_dir):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.mark.slow
def test_cli_mt_bench_writes_answers_judgments_metrics_and_no_key_and_a_rerun_asks_nothing(tiny_lm, tmp_path, monkeypatch):
    run, cache = tmp_path / "run", tmp_path / "cache"
    with StubChatServer(benchmark_verdict) as server:
        overrides = [
            "benchmark=mt_bench", f"model.name_or_path={tiny_lm}", "judge=openai", f"judge.base_url={server.base_url}",
            f"judge.api_key_env={KEY_ENV}", "benchmark.limit=2", "benchmark.max_new_tokens=4", f"paths.cache_dir={cache}",
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", **{KEY_ENV: PLANTED_KEY})
        command = [sys.executable, "-m", "selalign.evaluate", *overrides, f"hydra.run.dir={run}"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        assert len(server.requests) == 2 * 2  # two questions, two turns
        assert {request.authorization for request in server.requests} == {f"Bearer {PLANTED_KEY}"}

        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["mt_bench/score"] == 7.0 and metrics["mt_bench/turn_1"] == 8.0 and metrics["mt_bench/writing"] == 7.0
        assert list(metrics) == sorted(metrics)
        generations = [json.loads(line) for line in (run / "mt_bench_generations.jsonl").read_text().splitlines()]
        assert [len(row["answers"]) for row in generations] == [2, 2]
        judgments = [json.loads(line) for line in (run / "mt_bench_judgments.jsonl").read_text().splitlines()]
        assert [row["raw"] for row in judgments] == ["Rating: [[8]]", "Rating: [[6]]"] * 2
        assert OmegaConf.load(run / "config.yaml").benchmark.limit == 2
        assert "mt_bench/score" in result.stdout
        written = [path for path in [*run.rglob("*"), *cache.rglob("*")] if path.is_file()]
        assert len([path for path in written if path.parent.parent.name in ("generations", "judgments")]) == 2
        for path in written:
            assert PLANTED_KEY.encode() not in path.read_bytes(), path
        assert PLANTED_KEY not in result.stdout + result.stderr
        assert server.model_lists == [f"Bearer {PLANTED_KEY}"]  # the judge was checked first

        [answer_file] = (cache / "generations" / "mt_bench").iterdir()
        cached_answers = answer_file.read_text()
        monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
        assert evaluate(compose_evaluate(*overrides, output_dir=run)) == metrics
        assert len(server.requests) == 4
        assert answer_file.read_text() == cached_answers


def test_a_rerun_in_a_new_run_dir_generates_and_judges_nothing_again(tiny_lm, tmp_path, monkeypatch):
    """Both the answers (here from an OpenAI-compatible policy server that wants a key) and the judgments come from the
    shared cache; the key reaches the server and no file."""
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    with StubChatServer(echo_reply, api_key=PLANTED_KEY) as policy_server, StubChatServer(benchmark_verdict, models=["grader"]) as judge_server:
        overrides = [
            "benchmark=arena_hard", "benchmark.limit=3", f"model.name_or_path={tiny_lm}",
            "generator=openai", f"generator.base_url={policy_server.base_url}", "generator.model=served-policy", f"generator.api_key_env={KEY_ENV}",
            "judge=vllm", f"judge.base_url={judge_server.base_url}", "judge.model=grader", f"paths.cache_dir={tmp_path / 'cache'}",
        ]
        first = evaluate(compose_evaluate(*overrides, output_dir=tmp_path / "run_1"))
        assert len(policy_server.requests) == 3 and len(judge_server.requests) == 3 * 2
        second = evaluate(compose_evaluate(*overrides, output_dir=tmp_path / "run_2"))
        assert len(policy_server.requests) == 3 and len(judge_server.requests) == 3 * 2
    assert second == first and first["arena_hard/win_rate"] == 50.0
    assert (tmp_path / "run_2" / "arena_hard_generations.jsonl").read_text() == (tmp_path / "run_1" / "arena_hard_generations.jsonl").read_text()
    assert {(request.body["model"], request.authorization) for request in policy_server.requests} == {("served-policy", f"Bearer {PLANTED_KEY}")}
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) >= 2 * 4 + 2  # each run dir: config, metrics, generations, judgments; the two caches
    for path in written:
        assert PLANTED_KEY.encode() not in path.read_bytes(), path


JUDGE_FAILURES = {  # judge overrides -> the error evaluate must raise before anything else
    "no key": ([f"judge.api_key_env={KEY_ENV}"], JudgeRequestError, f"environment variable {KEY_ENV} is not set"),
    "model not served": (["judge.api_key_env=null"], JudgeRequestError, "does not serve the model 'gpt-4o-2024-08-06'; it serves: another-judge"),
    "unreachable": (["judge.api_key_env=null", "judge.max_retries=1"], JudgeUnavailableError, "failed 2 times in a row; last failure: APIConnectionError"),
}


@pytest.mark.parametrize("failure", list(JUDGE_FAILURES))
def test_an_evaluation_whose_judge_cannot_work_fails_before_loading_or_generating(failure, tmp_path, monkeypatch):
    """The policy folder does not exist: had anything tried to load it or generate, the error would be another."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    overrides, error, message = JUDGE_FAILURES[failure]
    with StubChatServer(benchmark_verdict) as closed:
        pass  # nothing listens at closed.base_url any more
    with StubChatServer(benchmark_verdict, models=["another-judge"]) as server:
        cfg = compose_evaluate(
            "benchmark=mt_bench", f"model.name_or_path={tmp_path / 'no-such-policy'}", "judge=openai",
            f"judge.base_url={closed.base_url if failure == 'unreachable' else server.base_url}", "judge.model=gpt-4o-2024-08-06", *overrides,
            f"paths.cache_dir={tmp_path / 'cache'}", output_dir=tmp_path / "run",
        )
        with pytest.raises(error, match=message):
            evaluate(cfg)
    assert server.requests == [] and not (tmp_path / "cache").exists()


def response_logp_by_hand(model, prompt_ids: list[int], response_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logps[len(prompt_ids) - 1 :].sum().item()


@pytest.fixture(scope="module")
def pref_setup(tiny_lm, tiny_ref, pairs_file, tmp_path_factory):
    """Composed pref_accuracy config (tiny policy and reference, 10 validation pairs in batches of 3) and its datamodule."""
    cfg = compose_evaluate(
        "benchmark=pref_accuracy", f"model.name_or_path={tiny_lm}", "ref_model=hub", f"ref_model.name_or_path={tiny_ref}",
        "data=files", f"data.path={pairs_file}", "data.validation_fraction=0.25", "data.eval_batch_size=3",
        output_dir=tmp_path_factory.mktemp("pref_accuracy"),
    )
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=load_tokenizer(str(tiny_lm)))
    datamodule.setup("validate")
    return cfg, datamodule


def test_pref_accuracy_matches_a_loop_over_pairs(pref_setup, tiny_lm, tiny_ref):
    cfg, datamodule = pref_setup
    metrics = evaluate(cfg)

    policy, reference = load_causal_lm(str(tiny_lm)), load_causal_lm(str(tiny_ref))
    margins = []
    for pair in datamodule.splits["validation"]:
        chosen, rejected = ([response_logp_by_hand(m, pair["prompt_ids"], pair[f"{side}_ids"]) for m in (policy, reference)] for side in ("chosen", "rejected"))
        margins.append((chosen[0] - chosen[1]) - (rejected[0] - rejected[1]))
    assert metrics["pref_accuracy/num_pairs"] == len(margins) == 10
    assert metrics["pref_accuracy/accuracy"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    assert min(abs(m) for m in margins) > 1e-3  # the two models disagree on every pair: no tie to read either way
    assert metrics["pref_accuracy/margin"] == pytest.approx(sum(margins) / len(margins), abs=1e-4)

    limited = PrefAccuracy(limit=4).margins(EvalContext(policy, datamodule.tokenizer, cfg.paths.output_dir, cfg.model, cfg.ref_model, datamodule=datamodule))
    assert limited.tolist() == pytest.approx(margins[:4], abs=1e-4)


def test_pref_accuracy_uses_cached_logps_without_a_reference(pref_setup, tiny_lm, tiny_ref):
    cfg, datamodule = pref_setup
    policy = load_causal_lm(str(tiny_lm))
    context = EvalContext(policy, datamodule.tokenizer, cfg.paths.output_dir, cfg.model, cfg.ref_model, datamodule=datamodule)
    live = PrefAccuracy().evaluate(context)
    datamodule.attach_cached_logps("reference", *compute_logps(load_causal_lm(str(tiny_ref)), datamodule, 4, torch.device("cpu")))
    context.ref_model_cfg = None
    assert PrefAccuracy().evaluate(context) == pytest.approx(live, abs=1e-5)
    with pytest.raises(ValueError, match="data=files data.path="):
        PrefAccuracy().evaluate(EvalContext(policy, datamodule.tokenizer, cfg.paths.output_dir, cfg.model))


@pytest.mark.parametrize("bench", BENCHMARK_CONFIGS)
@pytest.mark.parametrize("judge", JUDGE_CONFIGS)
def test_every_benchmark_and_judge_config_composes_and_instantiates(bench, judge, tmp_path_factory):
    extra = []
    if judge == "local_hf":
        folder = tmp_path_factory.getbasetemp() / "tiny_chat_judge"
        if not folder.exists():
            build_model(folder, build_tokenizer(folder, with_chat_template=True))
        extra = [f"judge.name_or_path={folder}", "judge.device=cpu"]
    elif judge == "vllm":
        extra = ["judge.model=served-judge"]
    cfg = compose_evaluate(f"benchmark={bench}", f"judge={judge}", "model.name_or_path=unused", *extra, output_dir="unused")
    evaluation = hydra.utils.instantiate(cfg.benchmark)
    assert callable(evaluation.evaluate)
    if bench != "pref_accuracy":
        assert type(evaluation.judge).__name__ == hydra.utils.get_class(cfg.judge._target_).__name__


@pytest.mark.parametrize("generator", GENERATOR_CONFIGS)
def test_every_generator_config_composes_and_instantiates(generator):
    extra = {"openai": ["generator.model=served-policy"], "vllm_server": [f"generator.command={FAKE_SERVE}"]}.get(generator, [])
    cfg = compose_evaluate(f"generator={generator}", "model.name_or_path=unused", *extra, output_dir="unused")
    if generator == "vllm" and importlib.util.find_spec("vllm") is None:
        with pytest.raises(Exception, match="needs the vllm package, which is not installed"):
            hydra.utils.instantiate(cfg.generator)
        return
    instance = hydra.utils.instantiate(cfg.generator)
    assert type(instance).__name__ == hydra.utils.get_class(cfg.generator._target_).__name__
    assert json.dumps(instance.identity)  # a plain JSON identity, part of every cache key


@pytest.mark.parametrize("bench", BENCHMARK_CONFIGS)
def test_benchmark_configs_compose_inside_the_training_config(bench, tiny_lm, tiny_ref, pairs_file, tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"benchmark={bench}", "benchmark.limit=3",
                                          "judge=openai", "judge.model=grader-x", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path}"])
    evaluation = hydra.utils.instantiate(cfg.benchmark)
    assert evaluation.limit == 3
    if bench != "pref_accuracy":  # the judged benchmarks get the run's judge and its shared cache
        assert evaluation.benchmark.name == bench and evaluation.judge.identity["model"] == "grader-x"
        assert Path(evaluation.cache_dir) == tmp_path / "cache"


def test_the_hf_generator_counts_generated_tokens_without_padding(tiny_lm):
    from selalign.generators import Policy, Sampling
    from selalign.generators.hf import HFGenerator

    model, tokenizer = load_causal_lm(str(tiny_lm)), load_tokenizer(str(tiny_lm))
    conversations = [[{"role": "user", "content": "What colour is the cat?"}], [{"role": "user", "content": "And the dog, number 3?"}]]
    generator = HFGenerator(batch_size=2, progress=False)
    answers = generator.generate(Policy(model=model, tokenizer=tokenizer), conversations, Sampling(6))
    answer_tokens = sum(min(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1, 6) for answer in answers)
    assert generator.generated_tokens == pytest.approx(answer_tokens, abs=2)
