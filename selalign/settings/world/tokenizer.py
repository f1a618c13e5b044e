"""A small byte-level BPE tokenizer trained on the world's own text.

Special tokens: ``<|bos|>`` (prepended when ``add_special_tokens=True``, as Llama-style tokenizers
do), ``<|eos|>`` and ``<|pad|>`` (distinct from eos). No chat template. Training is deterministic
given the world and the vocabulary size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from selalign.settings.world.generator import World

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
DEFAULT_VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 512
# Question/answer demonstrations (some wrong) added to the pretraining corpus for training the merges.
TOKENIZER_SFT_EXAMPLES = 4000


def world_training_texts(world: World) -> Iterator[str]:
    """The text the tokenizer learns from: the pretraining corpus (every fact) and train demonstrations."""
    yield from world.pretraining_corpus()
    for example in world.sft_examples(noise=0.5, n=TOKENIZER_SFT_EXAMPLES):
        yield f"{example['prompt']} {example['response']}"


def train_world_tokenizer(world: World, vocab_size: int = DEFAULT_VOCAB_SIZE, out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train the world's tokenizer; with ``out_dir``, also ``save_pretrained`` it there.

    ``AutoTokenizer.from_pretrained(out_dir)`` reloads a tokenizer that encodes and decodes identically.
    """
    special_tokens = [BOS, EOS, PAD]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator(world_training_texts(world), trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=MODEL_MAX_LENGTH
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
