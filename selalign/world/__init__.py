"""An offline synthetic preference world: seeded data, a gold judge, oracle token selection, a tokenizer."""

from selalign.world.generator import SPLITS, WORLD_VERSION, Entity, Question, World, WorldConfig
from selalign.world.judge import GoldJudge, Verdict
from selalign.world.oracle import decisive_token_mask
from selalign.world.tokenizer import BOS, EOS, PAD, train_world_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPLITS",
    "WORLD_VERSION",
    "Entity",
    "GoldJudge",
    "Question",
    "Verdict",
    "World",
    "WorldConfig",
    "decisive_token_mask",
    "train_world_tokenizer",
]
