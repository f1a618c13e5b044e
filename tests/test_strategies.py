"""The scale-out trainer configs (trainer=ddp, fsdp, deepspeed_zero3) build the right Lightning strategies; the SLURM launcher
config and the multi-node examples of the README compose."""

import importlib.util
import os
from functools import partial

import hydra
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from support.configs import compose_train, tiny_overrides
from selalign.module import PreferenceModule
from selalign.objectives import SelectiveDPO
from selalign.strategies import FSDPStrategy


def trainer_config(name, tiny_lm, tiny_ref, pairs_file, tmp_path):
    return compose_train(*tiny_overrides(tiny_lm, tiny_ref, pairs_file, tmp_path), f"trainer={name}", output_dir=tmp_path).trainer


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_scale_out_configs_compose_to_every_gpu_in_bf16_mixed(name, tiny_lm, tiny_ref, pairs_file, tmp_path):
    """Composition only: that they train is shown on CPU processes (tests/test_ddp.py, tests/test_fsdp.py)."""
    cfg = trainer_config(name, tiny_lm, tiny_ref, pairs_file, tmp_path)
    assert (cfg.accelerator, cfg.precision, cfg.devices) == ("gpu", "bf16-mixed", "auto")
    assert cfg.use_distributed_sampler is False  # the datamodule splits pairs across ranks itself


def test_ddp_config_builds_ddp_strategy(tiny_lm, tiny_ref, pairs_file, tmp_path):
    strategy = hydra.utils.instantiate(trainer_config("ddp", tiny_lm, tiny_ref, pairs_file, tmp_path).strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False}


def test_fsdp_config_builds_the_fsdp2_strategy(tiny_lm, tiny_ref, pairs_file, tmp_path):
    strategy = hydra.utils.instantiate(trainer_config("fsdp", tiny_lm, tiny_ref, pairs_file, tmp_path).strategy)
    assert isinstance(strategy, FSDPStrategy) and isinstance(strategy, ModelParallelStrategy)
    assert strategy.layer_classes == (LlamaDecoderLayer,)
    assert (strategy.param_dtype, strategy.reduce_dtype, strategy.cpu_offload) == (torch.bfloat16, torch.float32, False)
    assert strategy._save_distributed_checkpoint is False  # state_dict_type: full
    sharded = hydra.utils.instantiate(trainer_config("fsdp", tiny_lm, tiny_ref, pairs_file, tmp_path).strategy, state_dict_type="sharded")
    assert sharded._save_distributed_checkpoint is True
    with pytest.raises(ValueError, match="state_dict_type must be 'full' or 'sharded', got 'local'"):
        FSDPStrategy(["transformers.models.llama.modeling_llama.LlamaDecoderLayer"], state_dict_type="local")
    with pytest.raises(ValueError, match="param_dtype must be null or one of"):
        FSDPStrategy(["transformers.models.llama.modeling_llama.LlamaDecoderLayer"], param_dtype="bf16")


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one process, as FSDP2 needs one to shard (across a single process here)."""
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_shard_module_makes_every_layer_and_model_a_unit_and_the_step_is_unchanged(one_process_group, tiny_lm, tiny_ref, pairs_file):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from selalign.data import FilesDataModule
    from transformers import AutoTokenizer

    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=4)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    make = lambda: PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref),  # noqa: E731
                                    SelectiveDPO(), partial(torch.optim.AdamW, lr=1e-3))
    plain, module = make(), make()
    strategy = FSDPStrategy(["transformers.models.llama.modeling_llama.LlamaDecoderLayer"])
    strategy._device_mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    strategy.shard_module(module)
    strategy.shard_module(module)  # Lightning configures the module again for validation: nothing changes
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    assert module.policy in units and module.reference in units
    assert sum(isinstance(m, LlamaDecoderLayer) for m in units) == 2 * module.policy.config.num_hidden_layers
    assert all(isinstance(p, DTensor) for p in module.parameters())
    assert not any(p.requires_grad for p in module.reference.parameters())
    optimized = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.policy.parameters()}
    expected, got = plain.forward_objective(batch), module.forward_objective(batch)
    torch.testing.assert_close(got.losses, expected.losses, atol=1e-6, rtol=0)
    assert isinstance(module.reference.lm_head.weight, DTensor)  # the frozen reference is resharded after its forward
    got.loss.backward()
    assert all(p.grad is not None for p in module.policy.parameters())


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


def sbatch_script(launcher_cfg, folder) -> str:
    """The sbatch script Hydra's submitit launcher submits for ``launcher_cfg`` (its own mapping of the config to
    submitit's parameters), written without submitting it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(launcher_cfg, resolve=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in ("submitit_folder", "_target_")})
    return executor._executor._make_submission_file_text("python -m selalign.train", "job")


def readme_commands() -> list[list[str]]:
    """The README's shell commands, continuation lines joined, split into words."""
    import shlex

    from support.configs import REPO

    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    blocks = [block.split("```", 1)[0] for block in text.split("```bash")[1:]]
    lines = [line for block in blocks for line in block.splitlines() if not line.lstrip().startswith("#")]  # comment lines
    commands = [shlex.split(line.split(" #", 1)[0]) for line in lines]
    return [command for command in commands if command]


@pytest.fixture
def slurm_commands_on_path(tmp_path, monkeypatch):
    """Stand-ins for srun and sbatch on PATH (submitit looks for them); they are never run."""
    for name in ("srun", "sbatch"):
        (tmp_path / name).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_the_readme_slurm_example_asks_for_one_task_per_gpu_on_every_node(slurm_commands_on_path, tmp_path):
    from hydra import compose, initialize_config_dir

    from support.configs import REPO

    command = next(c for c in readme_commands() if "hydra/launcher=submitit_slurm" in c)
    overrides = [word for word in command[command.index("selalign.train") + 1 :] if word != "-m"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"], return_hydra_config=True)
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    assert launcher.tasks_per_node == launcher.gpus_per_node  # one process per GPU, as Lightning expects
    assert (trainer.num_nodes, trainer.devices) == (launcher.nodes, launcher.gpus_per_node)
    script = sbatch_script(launcher, tmp_path)
    for line in [f"#SBATCH --nodes={launcher.nodes}", f"#SBATCH --ntasks-per-node={launcher.gpus_per_node}",
                 f"#SBATCH --gpus-per-node={launcher.gpus_per_node}", "#SBATCH --time=1440", f"#SBATCH --partition={launcher.partition}"]:
        assert line in script, line


def test_the_readme_torchrun_example_starts_as_many_processes_as_the_trainer_expects(tmp_path):
    from support.configs import compose_train

    command = next(c for c in readme_commands() if c[0] == "torchrun")
    nodes, per_node = int(command[command.index("--nnodes") + 1]), int(command[command.index("--nproc-per-node") + 1])
    overrides = command[command.index("selalign.train") + 1 :]
    cfg = compose_train(*[o for o in overrides if not o.startswith("hydra.")], output_dir=tmp_path)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (nodes, per_node)
    assert any(o.startswith("hydra.run.dir=") for o in overrides)  # every process writes into one pinned run dir
    assert cfg.trainer.strategy._target_ == "selalign.strategies.FSDPStrategy"
