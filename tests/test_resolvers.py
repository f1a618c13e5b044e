"""The one config resolver, ${setting_path:...}: a pure look-up, registered by every entry point, that builds nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.configs import REPO, compose_train

CONF = REPO / "conf"
HYDRA_RESOLVERS = {"now", "hydra"}  # registered by Hydra itself when it starts a job


def resolvers_used_in_conf() -> set[str]:
    names = set()
    for yaml_file in CONF.rglob("*.yaml"):
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):", yaml_file.read_text()))  # ${oc.env:...} has a dot: not ours
    return names - HYDRA_RESOLVERS


def test_conf_uses_only_the_setting_path_resolver():
    assert resolvers_used_in_conf() == {"setting_path"}


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ["selalign.train", "selalign.evaluate", "selalign.prepare"])
def test_entry_point_registers_the_resolver(entry_point):
    check = "import sys, {0}; from omegaconf import OmegaConf; print(sorted(n for n in sys.argv[1:] if not OmegaConf.has_resolver(n)))"
    result = subprocess.run([sys.executable, "-c", check.format(entry_point), *sorted(resolvers_used_in_conf())], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", f"{entry_point} leaves these resolvers of conf/ unregistered: {result.stdout.strip()}"


@pytest.mark.parametrize("overrides", [(), ("experiment=smollm2_sentiment",), ("ref_model=world_small_dpo", "selector_model=world_large_dpo")])
def test_resolving_the_whole_config_on_an_empty_cache_builds_nothing(overrides, tmp_path):
    from omegaconf import OmegaConf

    cache = tmp_path / "cache"
    cfg = compose_train(*overrides, f"paths.cache_dir={cache}", output_dir=tmp_path / "run")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert str(cache) in resolved["model"]["name_or_path"] and str(cache) in resolved["ref_model"]["name_or_path"]
    assert not cache.exists()


def test_a_setting_artifact_without_a_setting_names_what_to_set(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_train("~setting", output_dir=tmp_path)
    with pytest.raises(Exception, match="selects no setting; add setting=world"):
        OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [("--cfg", "job"), ("--help",)])
def test_cfg_job_and_help_compose_in_seconds_and_build_nothing(flags, tmp_path):
    env = dict(os.environ, SELALIGN_CACHE=str(tmp_path / "cache"), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "selalign.train", *flags], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "cache").exists()
    if flags[0] == "--cfg":
        assert "name_or_path: ${setting_path:world_small}" in result.stdout
