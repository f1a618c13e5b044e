"""The one config resolver of ``conf/``, registered on import (the entry points import this module).

``${setting_path:NAME}``: where the run's setting keeps its artifact NAME (a model folder, a file of sampled pairs),
``Setting.path(NAME)``. A pure look-up: resolving it builds nothing; the entry points run the setting's prepare step
for what is missing (``selalign.prepare``).
"""

from omegaconf import DictConfig, OmegaConf

from selalign.settings.base import setting_of


def setting_path(name: str, _root_: DictConfig) -> str:
    return str(setting_of(_root_).path(name))


if not OmegaConf.has_resolver("setting_path"):
    OmegaConf.register_new_resolver("setting_path", setting_path)
