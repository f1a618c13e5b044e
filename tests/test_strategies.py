"""The scale-out trainer configs (trainer=ddp, fsdp, deepspeed_zero3) build the right Lightning strategies."""

import importlib.util
from functools import partial

import hydra
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch.distributed.fsdp import ShardingStrategy
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from support.configs import compose_train, tiny_overrides
from selalign.module import PreferenceModule
from selalign.objectives import SelectiveDPO
from selalign.strategies import is_shard_unit


def trainer_config(name, tiny_lm, tiny_ref, pairs_file, tmp_path):
    return compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"trainer={name}", output_dir=tmp_path).trainer


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_scale_out_configs_train_in_bf16_on_gpus(name, tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = trainer_config(name, tiny_lm, tiny_ref, pairs_file, tmp_path)
    assert (cfg.accelerator, cfg.precision, cfg.devices) == ("gpu", "bf16-mixed", "auto")
    assert cfg.use_distributed_sampler is False  # the datamodule splits pairs across ranks itself


def test_ddp_config_builds_ddp_strategy(tiny_lm, tiny_ref, pairs_file, tmp_path):
    strategy = hydra.utils.instantiate(trainer_config("ddp", tiny_lm, tiny_ref, pairs_file, tmp_path).strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False}


def test_fsdp_config_builds_fsdp_strategy_with_layer_units_and_checkpointing(tiny_lm, tiny_ref, pairs_file, tmp_path):
    strategy = hydra.utils.instantiate(trainer_config("fsdp", tiny_lm, tiny_ref, pairs_file, tmp_path).strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy._state_dict_type == "full"
    assert strategy._activation_checkpointing_kwargs  # decoder layers are checkpointed


def test_fsdp_units_never_mix_policy_and_reference_parameters(tiny_lm, tiny_ref):
    policy, reference = AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref)
    module = PreferenceModule(policy, reference, SelectiveDPO(), partial(torch.optim.AdamW, lr=1e-3))
    units = [m for m in module.modules() if is_shard_unit(m, layers=(LlamaDecoderLayer,))]
    layers = [m for m in units if isinstance(m, LlamaDecoderLayer)]
    assert len(layers) == 2 * policy.config.num_hidden_layers
    assert policy in units and reference in units and policy.model not in units  # tied embeddings stay in one unit
    # Every parameter lies in a unit, and every parameter's innermost unit holds trainable ones only or frozen ones only.
    assert {id(p) for unit in units for p in unit.parameters()} == {id(p) for p in module.parameters()}
    for unit in units:
        nested = {id(p) for other in unit.modules() if other is not unit and other in units for p in other.parameters()}
        own = [p for p in unit.parameters() if id(p) not in nested]
        assert len({p.requires_grad for p in own}) <= 1, type(unit).__name__


def test_deepspeed_zero3_config(tiny_lm, tiny_ref, pairs_file, tmp_path):
    cfg = trainer_config("deepspeed_zero3", tiny_lm, tiny_ref, pairs_file, tmp_path)
    assert cfg.strategy._target_ == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert cfg.strategy.stage == 3 and cfg.strategy.exclude_frozen_parameters
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(Exception, match=r"pip install -U deepspeed"):
            hydra.utils.instantiate(cfg.strategy)
    else:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategy = hydra.utils.instantiate(cfg.strategy)
        assert isinstance(strategy, DeepSpeedStrategy)
        assert strategy.config["zero_optimization"]["stage"] == 3
