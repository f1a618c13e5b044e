"""The step benchmark's documented shapes and lengths, and its GPU script run at tiny shapes on the CPU."""

import importlib.util
import os
import subprocess
import sys

import pytest

from support.configs import REPO


def bench_step():
    spec = importlib.util.spec_from_file_location("bench_step", REPO / "scripts" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ultrafeedback_lengths_pad_random_batches_47_percent_and_grouped_ones_20():
    bench = bench_step()
    args = bench.parse_args(["--shape", "smollm2", "--lengths", "ultrafeedback", "--pairs", "8"])
    random_share, grouped_share = bench.padding_shares(args)
    assert random_share == pytest.approx(0.47, abs=0.02) and grouped_share == pytest.approx(0.20, abs=0.02)
    prompts = [len(p["prompt_ids"]) for p in bench.synthetic_pairs(args, 2000)]
    assert 140 <= sorted(prompts)[1000] <= 160  # median prompt: 150 tokens


@pytest.mark.parametrize("shape, parameters, ratio", [("smollm2", 134.5e6, 7.9), ("qwen05", 494.0e6, 7.6)])
def test_shapes_and_the_8x_reference(shape, parameters, ratio):
    bench = bench_step()
    args = bench.parse_args(["--shape", shape])
    policy, _ = bench.model_size(args)
    reference, _ = bench.model_size(args, 8)
    assert policy == pytest.approx(parameters, rel=1e-3) and reference / policy == pytest.approx(ratio, abs=0.05)


@pytest.mark.slow
def test_gpu_script_runs_its_sections_at_tiny_shapes_on_the_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), SMOKE="1", PYTHON=sys.executable, OMP_NUM_THREADS="1")  # this interpreter, venv or not
    result = subprocess.run(["bash", "scripts/gpu_bench.sh", "lora", "cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "gpu_bench.txt").read_text()
    assert "selective_dpo LoRA, adapters-off ref" in report and "step time: LoRA adapters-off / two models" in report
    assert "cache build speed-up, cpu / cpu" in report
