"""scripts/bench_generate.py on CPU: the hf side measures, a missing vLLM is said plainly, the served side and the
report work end to end with tests/support/stub_server.py standing in for `vllm serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.configs import REPO

SCRIPT = REPO / "scripts" / "bench_generate.py"


@pytest.mark.slow
def test_bench_generate_runs_the_hf_side_and_reports_a_missing_vllm_then_a_served_side(tiny_lm, tmp_path):
    """About 40 s: two runs of the script on 3 prompts, 6 new tokens."""
    common = [sys.executable, str(SCRIPT), "--model", str(tiny_lm), "--prompts", "3", "--max-new-tokens", "6"]
    env = dict(os.environ, PATH="/usr/bin:/bin", HF_HUB_OFFLINE="1")  # no vllm executable on this PATH
    result = subprocess.run([*common, "--json", str(tmp_path / "hf_only.json")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "vllm is not installed: no `vllm` executable on PATH" in result.stdout
    hf_only = json.loads((tmp_path / "hf_only.json").read_text())
    assert hf_only["prompts"] == 3 and hf_only["hf"]["output_tokens"] > 0 and hf_only["hf"]["tokens_per_s"] > 0 and "server" not in hf_only

    stand_in = f"{sys.executable} {REPO / 'tests' / 'support' / 'stub_server.py'}"
    result = subprocess.run([*common, "--server-command", stand_in, "--json", str(tmp_path / "both.json")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["server"]["label"] == "server" and both["server"]["output_tokens"] > 0
    assert both["speedup"] == pytest.approx(both["server"]["tokens_per_s"] / both["hf"]["tokens_per_s"])
    assert both["identical_greedy_answers"] == 0.0  # the stand-in echoes the prompt; the tiny model does not
    assert "identical greedy answers: 0.0%  target >= 90%: NOT met" in result.stdout
