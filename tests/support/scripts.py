"""Load a file of scripts/ as a module, for the tests of the study scripts."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from support.configs import REPO


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``name`` (registered in sys.modules: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
