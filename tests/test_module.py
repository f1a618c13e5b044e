import pytest
import functools

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selalign.data import FilesDataModule
from selalign.module import PreferenceModule
from selalign.objectives import DPO, SelectiveDPO


def make_module(tiny_lm, tiny_ref, objective):
    policy = AutoModelForCausalLM.from_pretrained(tiny_lm)
    reference = AutoModelForCausalLM.from_pretrained(tiny_ref)
    return PreferenceModule(policy, reference, objective, functools.partial(torch.optim.AdamW, lr=1e-3))


def first_batch(tiny_lm, pairs_file, batch_size=4):
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=batch_size)
    dm.setup()
    return next(iter(dm.val_dataloader()))


def test_prompt_and_padding_never_selected_in_a_real_forward(tiny_lm, tiny_ref, pairs_file):
    module = make_module(tiny_lm, tiny_ref, SelectiveDPO(beta=0.1, ratio=0.4))
    batch = first_batch(tiny_lm, pairs_file)
    output = module.forward_objective(batch)
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    assert not (output.selected & ~batch["response_mask"]).any()
    assert output.selected.any(dim=1).all()  # every row keeps some response tokens


def test_reference_is_frozen_and_left_out_of_optimizer_and_checkpoint(tiny_lm, tiny_ref):
    module = make_module(tiny_lm, tiny_ref, DPO(beta=0.1))
    module.train()
    assert not module.reference.training and module.policy.training
    assert not any(p.requires_grad for p in module.reference.parameters())
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.policy.parameters()}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("reference.") for k in checkpoint["state_dict"])


def test_selective_dpo_at_ratio_one_matches_dpo_through_the_models(tiny_lm, tiny_ref, pairs_file):
    batch = first_batch(tiny_lm, pairs_file)
    selective = make_module(tiny_lm, tiny_ref, SelectiveDPO(beta=0.1, ratio=1.0)).forward_objective(batch)
    plain = make_module(tiny_lm, tiny_ref, DPO(beta=0.1)).forward_objective(batch)
    assert torch.allclose(selective.losses, plain.losses, atol=1e-6)


def test_oracle_precision_and_recall_hand_computed():
    from selalign.module import oracle_metrics
    from selalign.objectives import ObjectiveOutput

    response = torch.tensor([[False, True, True, True, True], [False, False, True, True, False]])
    decisive = torch.tensor([[False, True, False, False, False], [False, False, False, True, False]])
    selected = torch.tensor([[False, True, True, False, False], [False, False, False, False, False]])
    output = ObjectiveOutput(loss=torch.tensor(0.0), losses=torch.zeros(1), selected=selected)
    metrics = oracle_metrics(output, {"response_mask": response, "decisive_mask": decisive})
    assert metrics["selection/precision"].item() == 0.5  # 1 of 2 selected tokens is decisive
    assert metrics["selection/recall"].item() == 0.5  # 1 of 2 decisive tokens selected
    assert metrics["oracle/decisive_share"].item() == pytest.approx(2 / 6)
    assert oracle_metrics(output, {"response_mask": response}) == {}
