"""Preference rows: validation, prompt formatting and tokenization.

A row has ``prompt``, ``chosen`` and ``rejected``, in one of the two formats TRL accepts:
- plain: three non-empty strings;
- conversational: ``prompt`` a list of {role, content} messages, ``chosen``/``rejected`` lists of
  assistant messages (a plain-string field is read as one message: user for the prompt, assistant for responses).

Tokenizers with a chat template render the conversation with it. Tokenizers without one use the plain format

    [bos]System: {content}\\nUser: {content}\\nAssistant: {content}\\n ... Assistant:

whose response is `` {content}`` followed by the eos token. Prompt and responses are tokenized separately,
so a response's tokens are the same whatever prompt precedes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

FIELDS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


class InvalidRowError(ValueError):
    """A preference row that cannot be trained on; the message names the source, the row and the field."""


def row_problem(row: dict) -> tuple[str, str] | None:
    """(field, what is wrong) for the first problem of ``row``, or None if it is a valid preference row."""
    for field in FIELDS:
        if field not in row or row[field] is None:
            return field, "missing"
        value = row[field]
        if isinstance(value, str):
            if not value.strip():
                return field, "empty string"
        elif isinstance(value, list):
            if not value:
                return field, "empty message list"
            for i, message in enumerate(value):
                if not isinstance(message, dict) or "role" not in message or "content" not in message:
                    return field, f"message {i} is not a {{role, content}} dict"
                if message["role"] not in ROLES:
                    return field, f"message {i} has role {message['role']!r}, expected one of {list(ROLES)}"
                if not isinstance(message["content"], str) or not message["content"].strip():
                    return field, f"message {i} has empty or non-string content"
        else:
            return field, f"expected a string or a list of messages, got {type(value).__name__}"
    if row["chosen"] == row["rejected"]:
        return "rejected", "identical to chosen"
    return None


def as_messages(value: str | list[dict], role: str) -> list[dict]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict]) -> str:
    """The prompt text the model continues, in training and in generation alike."""
    messages = as_messages(prompt, "user")
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return f"{bos}{turns}Assistant:"


def render_response(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict]) -> tuple[str, int]:
    """(response text as it follows the rendered prompt, character offset of the first message's content in it).

    Without a chat template the eos token is appended by ``tokenize_pair``, not written here.
    """
    messages = as_messages(response, "assistant")
    if not tokenizer.chat_template:
        text = " " + messages[0]["content"] + "".join(f"\n{m['role'].capitalize()}: {m['content']}" for m in messages[1:])
        return text, 1
    prompt_messages = as_messages(prompt, "user")
    prompt_text = tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt_messages + messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the tokenizer's chat template renders the prompt differently with and without the response; cannot split them")
    text = full_text[len(prompt_text):]
    return text, max(text.find(messages[0]["content"]), 0)


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_decisive: list[bool] | None
    rejected_decisive: list[bool] | None
    prompt_truncated: bool
    response_truncated: bool


def spans_to_token_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], shift: int = 0) -> list[bool]:
    """True on every token whose character range overlaps one of ``spans`` (each shifted by ``shift``)."""
    shifted = [(start + shift, end + shift) for start, end in spans]
    return [any(token_start < end and start < token_end for start, end in shifted) for token_start, token_end in offsets]


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, row: dict, max_length: int, max_prompt_length: int) -> TokenizedPair:
    """Token ids of prompt and both responses; prompt cut from the left, responses from the right.

    Rows may carry ``chosen_decisive`` / ``rejected_decisive``: [start, end) character spans inside the first
    response message that decide the preference (synthetic settings with an oracle); they become per-token masks.
    """
    prompt_ids = tokenizer(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
    prompt_truncated = len(prompt_ids) > max_prompt_length
    prompt_ids = prompt_ids[-max_prompt_length:]
    budget = max_length - len(prompt_ids)
    responses, masks, response_truncated = [], [], False
    for field in ("chosen", "rejected"):
        ids, mask = encode_response(tokenizer, row["prompt"], row[field], row.get(f"{field}_decisive"))
        response_truncated |= len(ids) > budget
        responses.append(ids[:budget])
        masks.append(None if mask is None else mask[:budget])
    return TokenizedPair(prompt_ids, responses[0], responses[1], masks[0], masks[1], prompt_truncated, response_truncated)


def encode_response(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict], decisive: list | None = None) -> tuple[list[int], list[bool] | None]:
    """Token ids of one response as it follows its rendered prompt (eos appended without a chat template), and the
    per-token decisive mask of ``decisive`` spans when given."""
    text, content_offset = render_response(tokenizer, prompt, response)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=decisive is not None)
    ids = list(encoded["input_ids"])
    mask = None if decisive is None else spans_to_token_mask(encoded["offset_mapping"], decisive, content_offset)
    if not tokenizer.chat_template and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        mask = None if mask is None else mask + [False]
    return ids, mask


def response_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one answer, exactly as ``tokenize_pair`` tokenizes a response, without truncation."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    return prompt_ids, encode_response(tokenizer, prompt, response)[0]
