"""Every custom resolver that conf/ uses is registered by the entry points themselves, in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"
HYDRA_RESOLVERS = {"now", "hydra"}  # registered by Hydra itself when it starts a job


def resolvers_used_in_conf() -> set[str]:
    names = set()
    for yaml_file in CONF.rglob("*.yaml"):
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):", yaml_file.read_text()))  # ${oc.env:...} has a dot: not ours
    return names - HYDRA_RESOLVERS


def test_conf_uses_the_three_model_resolvers():
    assert resolvers_used_in_conf() == {"world_model", "smollm2", "smollm2_sentiment_dpo"}


@pytest.mark.parametrize("entry_point", ["selalign.train", "selalign.evaluate"])
def test_entry_point_registers_every_resolver_of_conf(entry_point):
    check = "import sys, {0}; from omegaconf import OmegaConf; print(sorted(n for n in sys.argv[1:] if not OmegaConf.has_resolver(n)))"
    result = subprocess.run([sys.executable, "-c", check.format(entry_point), *sorted(resolvers_used_in_conf())], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", f"{entry_point} leaves these resolvers of conf/ unregistered: {result.stdout.strip()}"
