from transformers import AutoTokenizer

from selalign.settings.world import BOS, EOS, PAD, World, WorldConfig, train_world_tokenizer
from selalign.settings.world.tokenizer import DEFAULT_VOCAB_SIZE


def test_special_tokens(world_tokenizer):
    assert (world_tokenizer.bos_token, world_tokenizer.eos_token, world_tokenizer.pad_token) == (BOS, EOS, PAD)
    ids = {world_tokenizer.bos_token_id, world_tokenizer.eos_token_id, world_tokenizer.pad_token_id}
    assert ids == {0, 1, 2}
    assert world_tokenizer.pad_token_id != world_tokenizer.eos_token_id
    assert len(world_tokenizer) == DEFAULT_VOCAB_SIZE
    assert world_tokenizer.chat_template is None


def test_bos_only_when_special_tokens_are_asked_for(world_tokenizer):
    with_special = world_tokenizer("What is 7 plus 5?")["input_ids"]
    without = world_tokenizer("What is 7 plus 5?", add_special_tokens=False)["input_ids"]
    assert with_special == [world_tokenizer.bos_token_id, *without]
    assert world_tokenizer.eos_token_id not in with_special


def test_save_and_reload_round_trip(world, world_tokenizer, tmp_path):
    world_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == world_tokenizer.get_vocab()
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (0, 1, 2)
    assert reloaded.chat_template is None
    for pair in world.preference_pairs("validation", 50):
        for text in (pair["prompt"], pair["chosen"], pair["rejected"]):
            ids = world_tokenizer(text)["input_ids"]
            assert reloaded(text)["input_ids"] == ids
            assert reloaded.decode(ids, skip_special_tokens=True) == text


def test_training_is_deterministic_and_saves_to_out_dir(world, world_tokenizer, tmp_path):
    again = train_world_tokenizer(world, out_dir=tmp_path)
    assert again.backend_tokenizer.to_str() == world_tokenizer.backend_tokenizer.to_str()
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == world_tokenizer.get_vocab()


def test_vocabulary_follows_the_world_and_the_requested_size(world_tokenizer):
    other = train_world_tokenizer(World(WorldConfig(seed=8)), vocab_size=600)
    assert len(other) == 600
    assert set(other.get_vocab()) - set(world_tokenizer.get_vocab())
