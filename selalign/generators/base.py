"""The generator contract: a policy's answers to chat conversations, from any engine, cached and resumable.

Every generator of the ``generator`` config group (``hf``, ``openai``, ``vllm``, ``vllm_server``) is called the
same way::

    policy = Policy.from_config(model_cfg, model=model, tokenizer=tokenizer)
    answers = generator.generate(policy, conversations, Sampling(max_new_tokens=48, temperature=1.0, seed=3), cache=cache)

- ``policy`` (``Policy``): what is asked. ``model`` is the in-memory ``PreTrainedModel`` (the ``hf`` generator
  decodes with it), ``tokenizer`` its tokenizer, ``name_or_path`` the folder or hub id of its weights (what
  ``vllm`` and ``vllm_server`` load), ``identity`` its ``selalign.store.model_identity`` (the model part of every
  cache key). ``needs_model`` / ``needs_tokenizer`` say which of ``model`` and ``tokenizer`` a generator reads.
- ``conversations``: lists of ``{role, content}`` messages (roles system, user, assistant), each ending with the
  user message to answer. The prompt is the one the model continued in training (``selalign.data.formats``): the
  tokenizer's chat template, or the plain ``[bos]User: ...\\nAssistant:`` format when it has none (``openai``
  sends the messages and the server renders them).
- ``Sampling``: at most ``max_new_tokens`` new tokens; greedy when ``temperature == 0``, otherwise sampled at
  ``temperature`` (other sampling settings, such as ``top_p``, come from the model's generation config or the
  generator's settings) with ``seed``.
- Returns one answer per conversation, in order: the text up to the first stop token (or ``max_new_tokens``),
  special tokens removed, surrounding whitespace stripped. An empty answer is an answer (the model stopped at once);
  a request that fails, after the engine's retries, raises ``GenerationError``: no answer is ever dropped or
  replaced by an empty string.
- ``cache`` (a ``GenerationCache`` of this policy's identity, optional): answers it holds are returned without
  generating; every new answer is appended as soon as it exists, so an interrupted call resumes where it stopped.
  A key is (model identity, generator identity, conversation, sampling). When the cache holds every answer,
  nothing is started (no model is moved, no engine or server launched).
- ``answer_turns(policy, user_turns, sampling, cache)``: multi-turn conversations (MT-Bench): turn k is asked in a
  conversation holding the earlier user turns and the model's own answers to them.
- ``with generator.session():`` keeps an engine or server (``vllm``, ``vllm_server``) up across several calls;
  outside a session each call that has something to generate starts it and stops it again.

A new generator is a subclass implementing ``identity`` and ``generate_uncached`` (and ``release`` when it holds an
engine), plus one yaml in ``conf/generator/``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selalign.store import model_identity

if TYPE_CHECKING:
    from selalign.generators.cache import GenerationCache

Conversation = Sequence[Mapping[str, str]]


class GenerationError(RuntimeError):
    """Answers could not be generated (an endpoint kept failing, a server did not start); the message says what was
    saved and how to resume."""


@dataclass(frozen=True)
class Sampling:
    """How answers are decoded: at most ``max_new_tokens`` tokens, greedy at ``temperature`` 0, else sampled with ``seed``.

    Seeding differs by engine: ``hf`` seeds torch's RNG once per call (a sampled answer also depends on which prompts
    share its batch); servers and vLLM seed every request with ``seed``.
    """

    max_new_tokens: int
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class Policy:
    """The model a generator answers with; see the module docstring for which generator reads which field."""

    name_or_path: str | None = None
    identity: Mapping[str, Any] | None = None
    tokenizer: Any = None
    model: Any = None
    revision: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any], model: Any = None, tokenizer: Any = None) -> Policy:
        """The policy described by a model config (``name_or_path``, ``dtype``, ``revision``, ...)."""
        return cls(
            name_or_path=str(model_cfg["name_or_path"]),
            identity=model_identity(model_cfg),
            tokenizer=tokenizer,
            model=model,
            revision=model_cfg.get("revision"),
            trust_remote_code=bool(model_cfg.get("trust_remote_code") or False),
        )


def check_conversations(conversations: Sequence[Conversation]) -> None:
    """Raise ValueError naming the first conversation that is not a message list ending with a user message."""
    for index, conversation in enumerate(conversations):
        if isinstance(conversation, str) or not conversation:
            raise ValueError(f"conversation {index} must be a non-empty list of {{role, content}} messages, got {conversation!r:.80}")
        for message in conversation:
            if not isinstance(message, Mapping) or "role" not in message or not isinstance(message.get("content"), str):
                raise ValueError(f"conversation {index} has a message that is not a {{role, content}} dict: {message!r:.80}")
        if conversation[-1]["role"] != "user":
            raise ValueError(f"conversation {index} ends with a {conversation[-1]['role']!r} message; it must end with the user message to answer")


class Generator(ABC):
    """Answers of a policy to conversations (the contract is the module docstring)."""

    needs_model: bool = False  # reads Policy.model (the in-memory weights)
    generated_tokens: int = 0  # new tokens this generator has generated, where its engine tells (for tokens per second)
    needs_tokenizer: bool = False  # reads Policy.tokenizer
    _sessions: int = 0

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What, besides the model, the prompt and the sampling settings, makes this generator's answers what they are."""

    @abstractmethod
    def generate_uncached(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, on_answer: Callable[[int, str], None]) -> None:
        """Generate every conversation's answer, calling ``on_answer(index, answer)`` as soon as each one exists."""

    def release(self) -> None:
        """Free what answering holds (an engine, a server); the next call starts it again. Nothing by default."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Keep the engine or server up across the calls made inside the block; release it when the block ends."""
        self._sessions += 1
        try:
            yield
        finally:
            self._sessions -= 1
            if not self._sessions:
                self.release()

    def generate(self, policy: Policy, conversations: Sequence[Conversation], sampling: Sampling, cache: GenerationCache | None = None) -> list[str]:
        """One answer per conversation, in order; those in ``cache`` are not generated again."""
        check_conversations(conversations)
        if cache is not None and policy.identity is not None and dict(cache.model_identity) != dict(policy.identity):
            raise ValueError(f"the cache {cache.path} holds the answers of another model ({cache.model_identity}), not of {dict(policy.identity)}")
        identity = self.identity
        keys = [cache.key(identity, conversation, sampling) if cache is not None else "" for conversation in conversations]
        answers: list[str | None] = [cache.get(key) if cache is not None else None for key in keys]
        pending = [index for index, answer in enumerate(answers) if answer is None]
        if not pending:
            return answers  # type: ignore[return-value]

        def save(position: int, answer: str) -> None:
            if not isinstance(answer, str):
                raise GenerationError(f"{self!r} gave a {type(answer).__name__} instead of an answer for conversation {pending[position]}")
            index = pending[position]
            answers[index] = answer
            if cache is not None:
                cache.put(keys[index], conversations[index], answer, identity, sampling)

        try:
            self.generate_uncached(policy, [conversations[index] for index in pending], sampling, save)
        except GenerationError as error:
            done = sum(answers[index] is not None for index in pending)
            kept = (
                f"{done} of {len(pending)} new answers are saved in {cache.path}; generating again with this model, generator and "
                "sampling settings resumes from there" if cache is not None else f"{done} of {len(pending)} answers were generated; none are kept (no cache)"
            )
            raise GenerationError(f"{error}\n{kept}") from error
        finally:
            if not self._sessions:
                self.release()
        missing = [index for index in pending if answers[index] is None]
        if missing:
            raise GenerationError(f"{self!r} returned no answer for {len(missing)} conversation(s), the first being {missing[0]}")
        return answers  # type: ignore[return-value]

    def answer_turns(self, policy: Policy, user_turns: Sequence[Sequence[str]], sampling: Sampling, cache: GenerationCache | None = None) -> list[list[str]]:
        """One answer per user turn of each conversation (``user_turns[i]``: its user messages, in order).

        Turn k is asked in a conversation that holds the earlier user turns and the model's own answers to them, as
        MT-Bench asks its second question; all conversations' turn k are generated in one call.
        """
        conversations: list[list[dict[str, str]]] = [[] for _ in user_turns]
        answers: list[list[str]] = [[] for _ in user_turns]
        for turn in range(max((len(turns) for turns in user_turns), default=0)):
            asking = [i for i, turns in enumerate(user_turns) if turn < len(turns)]
            for i in asking:
                conversations[i].append({"role": "user", "content": user_turns[i][turn]})
            replies = self.generate(policy, [conversations[i] for i in asking], sampling, cache)
            for i, reply in zip(asking, replies, strict=True):
                conversations[i].append({"role": "assistant", "content": reply})
                answers[i].append(reply)
        return answers
