"""Lightning's FSDP strategy set up for PreferenceModule from a Hydra config (``trainer=fsdp``)."""

from __future__ import annotations

from functools import partial

import hydra
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp.wrap import CustomPolicy
from transformers import PreTrainedModel


def is_shard_unit(module: torch.nn.Module, layers: tuple[type, ...]) -> bool:
    """Every decoder layer is an FSDP unit, and so is every whole language model (a model with an output layer).

    The model's unit holds its embeddings, final norm and output layer, so no unit mixes the policy's trainable
    parameters with the frozen reference's, and tied input and output embeddings stay in one unit.
    """
    if isinstance(module, layers):
        return True
    return isinstance(module, PreTrainedModel) and module.get_output_embeddings() is not None


def fsdp_strategy(layer_classes: list[str], activation_checkpointing: bool = True, **kwargs) -> FSDPStrategy:
    """FSDPStrategy sharding the policy and the frozen reference alike, in the units of ``is_shard_unit``.

    The reference's shards get no gradients and, as the optimizer takes the policy's parameters only, no
    optimizer state.

    Args:
        layer_classes: import paths of the decoder-layer classes, e.g.
            ``transformers.models.llama.modeling_llama.LlamaDecoderLayer``.
        activation_checkpointing: recompute each decoder layer's activations in the backward (less memory,
            about a third more compute).
        kwargs: the other arguments of ``lightning.pytorch.strategies.FSDPStrategy`` (sharding_strategy,
            state_dict_type, cpu_offload, ...) and of ``torch.distributed.fsdp.FullyShardedDataParallel``.
    """
    layers = tuple(hydra.utils.get_class(path) for path in layer_classes)
    return FSDPStrategy(
        auto_wrap_policy=CustomPolicy(partial(is_shard_unit, layers=layers)),
        activation_checkpointing_policy=set(layers) if activation_checkpointing else None,
        **kwargs,
    )
