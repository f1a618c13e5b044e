"""An offline synthetic preference world: seeded data, a gold judge, oracle token selection, a tokenizer,
a ladder of models trained on it, its preference data module and its gold evaluation. Its config resolver
``${world_model:...}`` (``selalign.world.resolver``) is registered by ``selalign.resolvers``.
"""

from selalign.world.benchmark import WorldGold
from selalign.world.datamodule import WorldDataModule
from selalign.world.generator import SPLITS, WORLD_VERSION, Entity, Question, World, WorldConfig
from selalign.world.judge import GoldJudge, Verdict
from selalign.world.ladder import LADDER_MODELS, LADDER_SCALES, LadderRecipe, ensure_ladder, ladder_dir
from selalign.world.oracle import decisive_token_mask
from selalign.world.tokenizer import BOS, EOS, PAD, train_world_tokenizer

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
