"""``setting=world``: an offline synthetic preference world (``generator``), its gold scorer (``scorer``), the oracle's
decisive tokens (``oracle``), a tokenizer and a ladder of models trained on it (``ladder``, built by the prepare
step), its preference data module (``datamodule``) and the setting that ties them together (``setting``).
"""

from selalign.settings.world.datamodule import WorldDataModule
from selalign.settings.world.generator import SPLITS, WORLD_VERSION, Entity, Question, World, WorldConfig
from selalign.settings.world.ladder import LADDER_FOLDERS, LADDER_MODELS, LadderRecipe, build_ladder, ladder_dir
from selalign.settings.world.oracle import decisive_token_mask
from selalign.settings.world.scorer import Assessment, WorldScorer
from selalign.settings.world.setting import WorldSetting
from selalign.settings.world.tokenizer import BOS, EOS, PAD, train_world_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "LADDER_FOLDERS",
    "LADDER_MODELS",
    "PAD",
    "SPLITS",
    "WORLD_VERSION",
    "Assessment",
    "Entity",
    "LadderRecipe",
    "Question",
    "World",
    "WorldConfig",
    "WorldDataModule",
    "WorldScorer",
    "WorldSetting",
    "build_ladder",
    "decisive_token_mask",
    "ladder_dir",
    "train_world_tokenizer",
]
