import pytest

from selalign.world import GoldJudge, World, WorldConfig, train_world_tokenizer


@pytest.fixture(scope="session")
def world():
    return World(WorldConfig(seed=7))


@pytest.fixture(scope="session")
def judge(world):
    return GoldJudge(world)


@pytest.fixture(scope="session")
def world_tokenizer(world):
    return train_world_tokenizer(world)
