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


# ------------------------------------------------------------------ the fused, packed step against the full-logit path

import copy

from selalign.data import PreferenceCollator
from selalign.logprobs import LogitsDistributions, model_label_logprobs
from selalign.models import AdapterReference
from selalign.objectives import DPOKD, DistillKD, ObjectiveInputs


def tokenized_batch(tiny_lm, pairs_file, batch_size=4):
    """A validation batch of very different lengths (every other pair's prompt cut to its last 6 tokens and its rejected
    response to 2), so that packed rows hold several sequences."""
    dm = FilesDataModule(path=str(pairs_file), validation_fraction=0.2, tokenizer=AutoTokenizer.from_pretrained(tiny_lm), batch_size=batch_size)
    dm.setup()
    pairs = [dict(pair) for pair in dm.splits["validation"][:batch_size]]
    for pair in pairs[::2]:
        pair["prompt_ids"], pair["rejected_ids"] = pair["prompt_ids"][-6:], pair["rejected_ids"][:2]
    batch = PreferenceCollator(dm.tokenizer.pad_token_id)(pairs)
    assert batch["packed"]["input_ids"].shape[0] < batch["input_ids"].shape[0]
    return batch


@pytest.mark.parametrize("objective", [DPO(beta=0.1), SelectiveDPO(beta=0.1, ratio=0.4), DistillKD(kd_ratio=0.5, temperature=2.0), DPOKD(beta=0.1, kd_weight=0.5)],
                         ids=["dpo", "selective_dpo", "distill_kd", "dpo_kd"])
def test_a_step_equals_the_padded_full_logit_step(objective, tiny_lm, tiny_ref, pairs_file):
    """Losses and policy gradients of the module's step (packed rows, fused output layers) equal those computed from
    the full logits of padded rows (``label_logprobs``, ``LogitsDistributions``), float32 to 1e-5."""
    batch = tokenized_batch(tiny_lm, pairs_file)
    policy, reference = AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref)
    with torch.no_grad():  # sharper distributions than the tiny random models': divergences well above rounding
        policy.lm_head.weight.mul_(10)
        reference.lm_head.weight.mul_(10)
    policy_copy, reference_copy = copy.deepcopy(policy), copy.deepcopy(reference)
    module = PreferenceModule(policy, reference, objective, functools.partial(torch.optim.AdamW, lr=1e-3), teacher=reference)
    output = module.forward_objective(batch)
    output.loss.backward()

    ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    policy_logits = policy_copy(input_ids=ids, attention_mask=attention).logits
    with torch.no_grad():
        reference_logits = reference_copy(input_ids=ids, attention_mask=attention).logits
    from selalign.logprobs import label_logprobs

    expected = objective(ObjectiveInputs(
        policy_logps=label_logprobs(policy_logits, ids) * mask, response_mask=mask, ref_logps=label_logprobs(reference_logits, ids) * mask,
        distributions=LogitsDistributions({"policy": policy_logits, "teacher": reference_logits}, mask),
    ))
    expected.loss.backward()
    torch.testing.assert_close(output.losses, expected.losses, atol=1e-5, rtol=0)
    for name in output.metrics:
        torch.testing.assert_close(output.metrics[name], expected.metrics[name], atol=1e-5, rtol=1e-5, msg=name)
    grads = dict(policy.named_parameters())
    for name, parameter in policy_copy.named_parameters():
        torch.testing.assert_close(grads[name].grad, parameter.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_frozen_models_run_before_the_policy(tiny_lm, tiny_ref, pairs_file):
    order = []
    policy, reference = AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_ref)
    policy.register_forward_hook(lambda *args: order.append("policy"))
    reference.register_forward_hook(lambda *args: order.append("reference"))
    PreferenceModule(policy, reference, DPO(), functools.partial(torch.optim.AdamW, lr=1e-3)).forward_objective(tokenized_batch(tiny_lm, pairs_file))
    assert order == ["reference", "policy"]  # the reference's activations are gone before the policy's are kept


def test_cached_scores_with_float_noise_select_as_the_live_ones_when_the_reference_is_the_policy_start(tiny_lm, pairs_file):
    """Reference = the policy's start: live scores are exactly 0 at the first step, so every token ties and is kept.
    Cached log-probs of the same model from other batch shapes differ by float noise; ties within the tolerance
    (``selalign.selection.TIE_TOLERANCE``) make the cached step select, and so train, exactly as the live one."""
    batch = tokenized_batch(tiny_lm, pairs_file)
    module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_lm), SelectiveDPO(ratio=0.4),
                              functools.partial(torch.optim.AdamW, lr=1e-3))
    live = module.forward_objective(batch)
    mask = batch["response_mask"]
    assert torch.equal(live.token_scores[mask], torch.zeros(int(mask.sum())))
    assert torch.equal(live.selected, mask)
    with torch.no_grad():
        reference_logps = model_label_logprobs(module.reference, batch["input_ids"], batch["attention_mask"])
    noise = 1e-6 * torch.randn(mask.shape, generator=torch.Generator().manual_seed(0))
    cached_module = PreferenceModule(AutoModelForCausalLM.from_pretrained(tiny_lm), None, SelectiveDPO(ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3))
    cached = cached_module.forward_objective(batch | {"ref_logps": (reference_logps + noise) * mask})
    assert torch.equal(cached.selected, live.selected)
    torch.testing.assert_close(cached.losses, live.losses, atol=1e-5, rtol=0)
    # Without the tolerance, the noise decides: a share of about 40% is kept.
    from selalign.selection import select_top_tokens

    noisy_scores = cached.token_scores
    assert select_top_tokens(noisy_scores, mask, 0.4, tolerance=0.0).sum() < 0.6 * mask.sum()


def lora_policy(tiny_lm):
    from selalign.settings.sentiment.lora import with_lora

    torch.manual_seed(0)
    policy = with_lora(AutoModelForCausalLM.from_pretrained(tiny_lm), r=4)
    with torch.no_grad():  # as after some training: the adapted model differs from its base
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return policy


def test_adapter_off_reference_equals_a_separate_copy_of_the_starting_weights(tiny_lm, pairs_file):
    pytest.importorskip("peft")  # the smollm extra: peft is in the dev dependencies
    from selalign.models import adapter_reference
    from omegaconf import OmegaConf

    batch = tokenized_batch(tiny_lm, pairs_file)
    policy = lora_policy(tiny_lm)
    reference = adapter_reference(policy, str(tiny_lm), OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(tiny_lm), "dtype": "float32", "revision": None}))
    assert isinstance(reference, AdapterReference) and reference.adapter is None
    module = PreferenceModule(policy, reference, SelectiveDPO(ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3))
    module.train()
    assert policy.training
    output = module.forward_objective(batch)
    assert policy.training  # the reference pass restores the policy's mode
    separate = PreferenceModule(lora_policy(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_lm), SelectiveDPO(ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3))
    expected = separate.forward_objective(batch)
    torch.testing.assert_close(output.token_scores, expected.token_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.losses, expected.losses, atol=1e-6, rtol=0)
    assert not torch.equal(output.token_scores, torch.zeros_like(output.token_scores))  # the adapters do change the policy
    # one model in the module: the base weights are not copied, and only the adapters are optimized
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in policy.parameters())
    optimized = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert optimized == {id(p) for name, p in policy.named_parameters() if "lora_" in name}
    # the adapters stay trainable after reference passes
    assert all(p.requires_grad for name, p in policy.named_parameters() if "lora_" in name)


def test_another_adapter_on_the_same_base_is_run_as_the_reference(tiny_lm, pairs_file, tmp_path):
    pytest.importorskip("peft")
    from omegaconf import OmegaConf
    from selalign.models import adapter_reference

    trained = lora_policy(tiny_lm)
    trained.peft_config["default"].base_model_name_or_path = str(tiny_lm)
    trained.save_pretrained(tmp_path / "dpo_adapter")
    policy = lora_policy(tiny_lm)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.zero_()  # a fresh policy: its adapter does nothing yet
    cfg = OmegaConf.create({"_target_": "selalign.models.load_causal_lm", "name_or_path": str(tmp_path / "dpo_adapter"), "dtype": "float32", "revision": None})
    reference = adapter_reference(policy, str(tiny_lm), cfg)
    assert reference.adapter == "reference"
    batch = tokenized_batch(tiny_lm, pairs_file)
    module = PreferenceModule(policy, reference, SelectiveDPO(ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3))
    output = module.forward_objective(batch)
    separate = PreferenceModule(lora_policy(tiny_lm), trained, SelectiveDPO(ratio=0.4), functools.partial(torch.optim.AdamW, lr=1e-3))
    with torch.no_grad():
        for name, parameter in separate.policy.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    expected = separate.forward_objective(batch)
    torch.testing.assert_close(output.token_scores, expected.token_scores, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for name, p in policy.named_parameters() if ".reference." in name)
    assert all(p.requires_grad for name, p in policy.named_parameters() if ".default." in name and "lora_" in name)


def test_selection_auroc_per_group_of_pairs():
    from selalign.module import oracle_metrics
    from selalign.objectives import ObjectiveOutput

    response = torch.ones(4, 3, dtype=torch.bool)
    decisive = torch.tensor([[True, False, False], [False, True, False], [True, False, False], [False, False, True]])
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    output = ObjectiveOutput(loss=torch.tensor(0.0), losses=torch.zeros(2), selected=response, token_scores=scores)
    # Pair 0 (rows 0 and 2) is a value pair: both rows ranked perfectly. Pair 1 (rows 1 and 3): row 1 ranks its decisive
    # token below one and tied with one other (0.25), row 3 ranks it first (1.0).
    metrics = oracle_metrics(output, {"response_mask": response, "decisive_mask": decisive, "pair_group": ["value", "final_mark"]})
    assert metrics["selection/auroc/value"].item() == 1.0
    assert metrics["selection/auroc/final_mark"].item() == pytest.approx((0.25 + 1.0) / 2)
    assert metrics["selection/auroc"].item() == pytest.approx((1.0 + 0.25 + 1.0 + 1.0) / 4)
