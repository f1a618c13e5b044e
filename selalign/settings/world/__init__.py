"""An offline synthetic preference world: seeded data, a gold judge, oracle token selection, a tokenizer,
a ladder of models trained on it, its preference data module and its gold evaluation. Its config resolver
``${world_model:...}`` (``selalign.settings.world.resolver``) is registered by ``selalign.resolvers``.
"""

from selalign.settings.world.benchmark import WorldGold
from selalign.settings.world.datamodule import WorldDataModule
from selalign.settings.world.generator import SPLITS, WORLD_VERSION, Entity, Question, World, WorldConfig
from selalign.settings.world.judge import GoldJudge, Verdict
from selalign.settings.world.ladder import LADDER_MODELS, LADDER_SCALES, LadderRecipe, ensure_ladder, ladder_dir
from selalign.settings.world.oracle import decisive_token_mask
from selalign.settings.world.tokenizer import BOS, EOS, PAD, train_world_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "LADDER_MODELS",
    "LADDER_SCALES",
    "PAD",
    "SPLITS",
    "WORLD_VERSION",
    "Entity",
    "GoldJudge",
    "LadderRecipe",
    "Question",
    "Verdict",
    "World",
    "WorldConfig",
    "WorldDataModule",
    "WorldGold",
    "decisive_token_mask",
    "ensure_ladder",
    "ladder_dir",
    "train_world_tokenizer",
]
