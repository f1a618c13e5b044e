"""Sharded training (``trainer=fsdp``): PyTorch's FSDP2 (``fully_shard``) through Lightning's ModelParallelStrategy,
and the policy's full weights out of any strategy.

FSDP2 is the FSDP that PyTorch maintains (``torch.distributed.fsdp.fully_shard``; the wrapper class of FSDP1 is
kept for compatibility only): parameters are DTensors sharded per unit, frozen and trainable parameters may share a
unit, and state dicts go through ``torch.distributed.checkpoint``. Lightning reaches it through ModelParallelStrategy,
whose ``configure_model`` hook is where the module shards itself (``PreferenceModule.configure_model`` calls
``FSDPStrategy.shard_module``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning.fabric.strategies.model_parallel import _is_sharded_checkpoint
from lightning.pytorch.strategies import DeepSpeedStrategy, ModelParallelStrategy

from selalign.store import atomic_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
METADATA_FILE = "meta.pt"  # what Lightning's ModelParallelStrategy writes beside the shards: the checkpoint but its tensors


class FSDPStrategy(ModelParallelStrategy):
    """Fully sharded data parallel over every process: the policy's parameters, gradients and optimizer state, and the
    frozen models' parameters, sharded per decoder layer and per model.

    Each decoder layer is a unit (``fully_shard``), and so is each whole model (embeddings, final norm, output layer:
    tied input and output embeddings stay in one unit). Frozen models get no gradients and, as the optimizer takes the
    policy's trainable parameters only, no optimizer state; they are resharded right after their forward. Activation
    checkpointing is the model's own (``model.gradient_checkpointing=true``: transformers' non-reentrant checkpointing of
    each decoder layer, which FSDP2 takes as it is).

    Args:
        layer_classes: import paths of the decoder-layer classes, e.g.
            ``transformers.models.llama.modeling_llama.LlamaDecoderLayer``.
        param_dtype, reduce_dtype: FSDP2's mixed precision (``MixedPrecisionPolicy``): parameters are gathered in
            ``param_dtype`` for compute and gradients reduced in ``reduce_dtype``; null keeps the parameters' dtype.
        cpu_offload: parameter shards, gradients and optimizer state in CPU memory (``CPUOffloadPolicy``).
        state_dict_type: ``full``: checkpoints gathered into one file by the first process; ``sharded``: one
            ``torch.distributed.checkpoint`` folder written by every process (large models). The policy only: frozen
            weights never enter a checkpoint.
        kwargs: ``lightning.pytorch.strategies.ModelParallelStrategy``'s ``process_group_backend`` and ``timeout``.
    """

    def __init__(self, layer_classes: list[str], param_dtype: str | None = None, reduce_dtype: str | None = None, cpu_offload: bool = False,
                 state_dict_type: str = "full", **kwargs):
        if state_dict_type not in ("full", "sharded"):
            raise ValueError(f"trainer.strategy.state_dict_type must be 'full' or 'sharded', got {state_dict_type!r}")
        for name, dtype in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if dtype is not None and dtype not in DTYPES:
                raise ValueError(f"trainer.strategy.{name} must be null or one of {sorted(DTYPES)}, got {dtype!r}")
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=state_dict_type == "sharded", **kwargs)
        self.layer_classes = tuple(hydra.utils.get_class(path) for path in layer_classes)
        self.cpu_offload = cpu_offload
        self.param_dtype, self.reduce_dtype = DTYPES.get(param_dtype), DTYPES.get(reduce_dtype)

    def setup_environment(self) -> None:
        # Every process is a data-parallel shard: a one-dimensional mesh over all of them.
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard_module(self, module) -> None:
        """Shards the policy and every distinct frozen model of a ``PreferenceModule`` in place (``fully_shard``); models
        sharded already (Lightning configures the module again for validation after fitting) are left as they are."""
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        mesh = self.device_mesh["data_parallel"]
        settings = {
            "mesh": mesh,
            "mp_policy": MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype),
            "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        }
        for model in module.sharded_models():
            if isinstance(model, FSDPModule):
                continue
            layers = [sub for sub in model.modules() if isinstance(sub, self.layer_classes)]
            if not layers:
                raise ValueError(f"no decoder layer of {[c.__name__ for c in self.layer_classes]} in {type(model).__name__}: "
                                 f"set trainer.strategy.layer_classes to its decoder layer class")
            for layer in layers:
                fully_shard(layer, **settings)
            fully_shard(model, **settings)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The policy's state dict, ``policy.``-prefixed: sharded (DTensors) for sharded checkpoints, else gathered on
        the first process (empty elsewhere). Frozen models are left out without ever being gathered."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=not self._save_distributed_checkpoint, cpu_offload=True)
        return {f"policy.{k}": v for k, v in get_model_state_dict(self.lightning_module.policy, options=options).items()}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options=None) -> None:
        """Full checkpoints through the checkpoint IO (atomic); sharded ones written into a temporary folder beside
        ``filepath`` by every process, then renamed into place by the first, so that a kill leaves the previous one."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        swap = atomic_path(path) if self.is_global_zero else None
        temporary = self.broadcast(str(swap.__enter__()) if swap is not None else None)
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            self.barrier("sharded_checkpoint_written")
        except BaseException as error:
            if swap is not None:
                swap.__exit__(type(error), error, error.__traceback__)
            raise
        if swap is not None:
            swap.__exit__(None, None, None)
        self.barrier("sharded_checkpoint_renamed")

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Loads the policy (and the optimizer) of a full or sharded checkpoint of ``save_checkpoint``.

        Lightning restores a strategy's checkpoint after setup without passing on ``fit``'s ``weights_only``: None is
        read as the ``weights_only=False`` that ``selalign.train`` gives for the checkpoints of ``resume=auto`` (a run's
        own checkpoints, with the random generators' states)."""
        weights_only = False if weights_only is None else weights_only
        path = Path(self.broadcast(str(checkpoint_path)))
        if not _is_sharded_checkpoint(path):
            return super().load_checkpoint(path, weights_only)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
        )

        policy = self.lightning_module.policy
        state = {"state_dict": {f"policy.{k}": v for k, v in get_model_state_dict(policy).items()}}
        dcp.load(state, checkpoint_id=path)
        set_model_state_dict(policy, {k.removeprefix("policy."): v for k, v in state["state_dict"].items()})
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"
            optimizer_state = {key: get_optimizer_state_dict(self.model, optimizer)}
            dcp.load(optimizer_state, checkpoint_id=path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=optimizer_state[key], options=StateDictOptions(cpu_offload=True))
        return torch.load(path / METADATA_FILE, weights_only=weights_only)


def full_policy_state_dict(trainer) -> dict[str, torch.Tensor]:
    """The policy's whole weights as a state dict on the first process ({} on the others), whatever the strategy:
    gathered from FSDP2's shards or DeepSpeed ZeRO-3's partitions one parameter at a time. Every process must call it."""
    strategy, policy = trainer.strategy, trainer.lightning_module.policy
    if isinstance(strategy, ModelParallelStrategy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        import deepspeed

        state = {}
        for name, parameter in policy.named_parameters(remove_duplicate=False):
            with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
                if trainer.is_global_zero:
                    state[name] = parameter.detach().cpu().clone()
        if trainer.is_global_zero:
            state |= {name: buffer.detach().cpu().clone() for name, buffer in policy.named_buffers() if name in policy.state_dict()}
        return state
    return {k.removeprefix("policy."): v for k, v in strategy.lightning_module_state_dict().items() if k.startswith("policy.")}
