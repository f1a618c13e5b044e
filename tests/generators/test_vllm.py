"""The in-process vllm generator where the vllm package is missing: a clear error naming the package, at once."""

from __future__ import annotations

import sys

import hydra
import pytest
from hydra import compose, initialize_config_dir

from selalign.generators.vllm import VLLMGenerator
from support.configs import REPO


@pytest.fixture
def without_vllm(monkeypatch):
    """An environment without the vllm package (None in sys.modules: import and find_spec report it missing)."""
    monkeypatch.setitem(sys.modules, "vllm", None)


def test_a_missing_vllm_package_is_named_with_what_to_do(without_vllm):
    with pytest.raises(ImportError, match=r"generator=vllm needs the vllm package, which is not installed \(pip install vllm, on a Linux machine with a CUDA GPU\); generator=hf works without it"):
        VLLMGenerator()


def test_the_config_fails_the_same_way_when_instantiated(without_vllm):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["generator=vllm", "model.name_or_path=unused", "paths.output_dir=unused"])
    with pytest.raises(Exception, match="vllm package, which is not installed") as error:
        hydra.utils.instantiate(cfg.generator)
    assert isinstance(error.value, ImportError) or isinstance(error.value.__cause__, ImportError)
