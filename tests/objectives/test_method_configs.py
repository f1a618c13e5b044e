"""Every conf/method/*.yaml composes with the real train config and instantiates an Objective."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from selalign.objectives import Objective

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Choices for the groups whose defaults may point at files that do not exist in every checkout.
GROUP_OVERRIDES = [
    "model=hub", "model.name_or_path=x", "ref_model=hub", "ref_model.name_or_path=x",
    "data=files", "data.path=x", "benchmark=none",
]


@pytest.mark.parametrize("method", sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml")))
def test_method_config_instantiates(method):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"method={method}", *GROUP_OVERRIDES])
    assert isinstance(instantiate(cfg.method), Objective)
