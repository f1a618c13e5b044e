"""Loading the policy, the frozen reference and other models; vocabulary checks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def hub_offline() -> bool:
    return hub_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def looks_like_a_path(name_or_path: str) -> bool:
    """True when ``name_or_path`` cannot be a hub id (``name`` or ``org/name``): absolute, ``./``, ``~``, deeper folders."""
    return name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1 or "\\" in name_or_path


def from_pretrained(load, name_or_path: str, what: str, **kwargs):
    """``load(name_or_path, **kwargs)``, a missing local folder named as such rather than as a malformed hub id."""
    if not str(name_or_path).strip():
        raise ValueError(f"{what}: no model named (name_or_path is empty); give a save_pretrained folder or a hub id")
    folder = Path(name_or_path).expanduser()
    if not folder.exists() and looks_like_a_path(name_or_path):
        raise FileNotFoundError(f"no model folder at {name_or_path!r} ({folder.resolve()}): it does not exist; {what} needs a save_pretrained folder or a hub id")
    try:
        return load(name_or_path, **kwargs)
    except OSError as error:
        if folder.exists() or not hub_offline():
            raise
        raise OSError(
            f"no model folder at {name_or_path!r} ({folder.resolve()}), and as a hub id it cannot be fetched offline "
            f"(HF_HUB_OFFLINE is set) unless it is in the hub cache; {what} needs a save_pretrained folder or a cached hub id"
        ) from error


def load_causal_lm(
    name_or_path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """A causal LM from a hub id or a local ``save_pretrained`` folder.

    Remote code in a model repository runs only with ``trust_remote_code=True`` (set it explicitly).
    ``gradient_checkpointing`` recomputes each layer's activations in the backward pass (long rows on GPU);
    it only acts while the model trains, so frozen models are unaffected.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for model {name_or_path!r}; choose one of {sorted(DTYPES)}")
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code, "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = from_pretrained(AutoModelForCausalLM.from_pretrained, name_or_path, "the model", **kwargs)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token (the eos token when the model defines none)."""
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, name_or_path, "the tokenizer", trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer of {name_or_path!r} has neither a pad nor an eos token; set one in its tokenizer config")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode (no dropout), no gradient: a model that is read, never trained. An ``AdapterReference`` is frozen
    already (its calls run without gradient) and is returned as it is."""
    if isinstance(model, AdapterReference):
        return model
    model.eval()
    model.requires_grad_(False)
    return model


def check_same_vocabulary(policy_tokenizer: PreTrainedTokenizerBase, policy_path: str, other_tokenizer: PreTrainedTokenizerBase, other_path: str, role: str) -> None:
    """Fail before training when ``other`` (the reference or teacher) would read token ids differently."""
    policy_vocab, other_vocab = policy_tokenizer.get_vocab(), other_tokenizer.get_vocab()
    if policy_vocab == other_vocab:
        return
    only_policy = sorted(set(policy_vocab) - set(other_vocab))[:5]
    only_other = sorted(set(other_vocab) - set(policy_vocab))[:5]
    moved = sorted(t for t in set(policy_vocab) & set(other_vocab) if policy_vocab[t] != other_vocab[t])[:5]
    raise ValueError(
        f"the {role} model {other_path!r} does not share the policy's vocabulary ({policy_path!r}): "
        f"{len(policy_vocab)} vs {len(other_vocab)} tokens; only in policy: {only_policy}, only in {role}: {only_other}, "
        f"different ids: {moved}. Token-level objectives compare log-probs of the same token ids, so both must use one tokenizer."
    )


def check_embedding_covers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str, role: str) -> None:
    """A model whose output layer is smaller than the tokenizer cannot score every token id."""
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ValueError(f"the {role} model {path!r} has {rows} output rows but its tokenizer has {len(tokenizer)} tokens")


class AdapterReference:
    """A frozen model that is a PEFT policy's own base, with its adapters off (``adapter=None``), or with another of
    its adapters (``adapter``): the reference pass runs on the policy's weights, with no second copy of the model.

    Calls run the policy without gradient and in eval mode (as a frozen model runs), selecting the adapter per call
    through PEFT's ``adapter_names`` (``"__base__"``: none), so the policy's trainable adapters are never switched
    or frozen; the policy's mode is restored afterwards.
    """

    def __init__(self, policy: PreTrainedModel, adapter: str | None = None):
        if not hasattr(policy, "peft_config"):
            raise ValueError(f"an adapter reference needs a PEFT policy, got {type(policy).__name__}")
        if adapter is not None and adapter not in policy.peft_config:
            raise ValueError(f"the policy has no adapter {adapter!r} (it has {sorted(policy.peft_config)})")
        self.policy, self.adapter = policy, adapter

    def __call__(self, **inputs):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                return self.policy(**inputs, adapter_names=[self.adapter or "__base__"] * inputs["input_ids"].shape[0])
        finally:
            self.policy.train(was_training)

    def get_base_model(self) -> PreTrainedModel:
        return self.policy.get_base_model()

    @property
    def config(self):
        return self.policy.config


def adapter_reference(policy: PreTrainedModel, policy_path: str, model_cfg) -> AdapterReference | None:
    """The frozen model of ``model_cfg`` as an ``AdapterReference`` on a PEFT ``policy`` (loaded from ``policy_path``),
    when it needs no weights of its own; None otherwise.

    - the policy's starting weights (``ref_model=policy_init`` with a LoRA policy: the same path, revision and dtype,
      no adapters of its own): the base with the adapters off;
    - a PEFT adapter folder whose base model is ``policy_path``: that adapter, loaded frozen onto the policy.
    """
    if not hasattr(policy, "peft_config") or model_cfg.get("_target_") != "selalign.models.load_causal_lm":
        return None
    path = str(model_cfg.name_or_path)
    dtype = DTYPES.get(model_cfg.get("dtype", "float32"))
    same_weights = path == str(policy_path) and dtype in (policy.get_base_model().dtype, "auto") and model_cfg.get("revision") is None
    if same_weights:
        return AdapterReference(policy)
    adapter_config = Path(path).expanduser() / "adapter_config.json"
    if adapter_config.is_file() and json.loads(adapter_config.read_text()).get("base_model_name_or_path") == str(policy_path):
        name = "reference"
        policy.load_adapter(path, adapter_name=name, is_trainable=False)
        return AdapterReference(policy, name)
    return None
