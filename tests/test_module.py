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


def test_a_separate_selector_feeds_the_scores_and_the_reference_anchors_the_loss(tiny_lm, tiny_ref, pairs_file):
    from selalign.logprobs import model_label_logprobs
    from selalign.objectives import selective_dpo_loss

    batch = first_batch(tiny_lm, pairs_file)
    policy, reference = AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref)
    selector = AutoModelForCausalLM.from_pretrained(tiny_lm)  # the policy's start: another model than the reference
    with torch.no_grad():  # perturb the selector so its scores differ from the policy's own
        for parameter in selector.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    module = PreferenceModule(policy, reference, SelectiveDPO(beta=0.1, ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3), selector=selector)
    output = module.forward_objective(batch)
    with torch.no_grad():
        ids, attention = batch["input_ids"], batch["attention_mask"]
        policy_logps, ref_logps, selector_logps = (model_label_logprobs(m, ids, attention) for m in (policy, reference, selector))
    mask, b = batch["response_mask"], ids.shape[0] // 2
    expected_scores = torch.cat([selector_logps[:b] - policy_logps[:b], policy_logps[b:] - selector_logps[b:]])
    assert torch.allclose(output.token_scores[mask], expected_scores[mask], atol=1e-5)
    selected = output.selected
    losses, _, _ = selective_dpo_loss(policy_logps[:b], policy_logps[b:], ref_logps[:b], ref_logps[b:], selected[:b], selected[b:], beta=0.1)
    assert torch.allclose(output.losses, losses, atol=1e-5)
    # Scored by the reference instead, the selection differs: the selector is really what picks the tokens.
    by_reference = make_module(tiny_lm, tiny_ref, SelectiveDPO(beta=0.1, ratio=0.4)).forward_objective(batch)
    assert not torch.equal(by_reference.selected, selected)


def test_each_distinct_frozen_model_runs_once_per_step(tiny_lm, tiny_ref, pairs_file):
    from selalign.objectives import DPOKD

    calls = []
    reference = AutoModelForCausalLM.from_pretrained(tiny_ref)
    reference.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), reference, DPOKD(beta=0.1, kd_weight=0.5), functools.partial(torch.optim.AdamW, lr=1e-3), teacher=reference)
    batch = first_batch(tiny_lm, pairs_file)
    module.forward_objective(batch)
    assert calls == [batch["input_ids"].shape[0]]  # one forward over all rows serves the reference and the teacher


def test_token_auroc_by_hand_with_ties():
    from selalign.module import token_auroc

    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1, 7.0], [1.0, 1.0, 1.0, 1.0, 0.0], [0.3, 0.2, 0.1, 0.0, 0.0]])
    positive = torch.tensor([[True, True, False, False, False], [True, False, False, False, False], [False, False, False, False, False]])
    mask = torch.tensor([[True, True, True, True, False], [True, True, True, False, False], [True, True, True, True, True]])
    auroc = token_auroc(scores, positive, mask, max_elements=16)  # one row per chunk
    # Row 0: positives 0.9, 0.5 against negatives 0.5, 0.1 (7.0 is outside the mask): 1 + 1 + 0.5 + 1 = 3.5 of 4 pairs.
    # Row 1: the positive ties both negatives: 0.5. Row 2 has no positive: NaN.
    assert auroc[:2].tolist() == [0.875, 0.5] and auroc[2].isnan()
    flipped = token_auroc(-scores, positive, mask)
    assert flipped[0].item() == pytest.approx(1 - 0.875)


def test_selection_auroc_is_logged_where_the_data_marks_decisive_tokens():
    from selalign.module import oracle_metrics
    from selalign.objectives import ObjectiveOutput

    response = torch.tensor([[False, True, True, True], [False, True, True, True]])
    decisive = torch.tensor([[False, True, False, False], [False, False, False, True]])
    scores = torch.tensor([[0.0, 2.0, 1.0, 0.0], [0.0, 3.0, 1.0, 2.0]])
    output = ObjectiveOutput(loss=torch.tensor(0.0), losses=torch.zeros(1), selected=response, token_scores=scores)
    metrics = oracle_metrics(output, {"response_mask": response, "decisive_mask": decisive})
    assert metrics["selection/auroc"].item() == pytest.approx((1.0 + 0.5) / 2)  # row 1: 2 beats 1, loses to 3
