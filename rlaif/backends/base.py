"""The interface every labeling engine implements (transformers, vLLM, OpenAI-compatible servers), and the
helpers every engine shares. Importing this module loads no engine (no torch, no transformers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rlaif.backends.label_tokens import Continuation, LabelTokenError

__all__ = ["Continuation", "LabelBackend", "LabelTokenError", "WrappedBackend", "cut_at_stop"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (generation may run a few tokens past it)."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


@runtime_checkable
class LabelBackend(Protocol):
    """What the labeler and the direct scorer need from an engine: every engine has all of it,
    so callers never ask whether an engine offers a feature."""

    @property
    def max_prompt_tokens(self) -> int | None:
        """Longest prompt the model takes, in tokens (None: no known limit). The labeler cuts each
        pair's context from the left to fit it, rather than let the engine fail or truncate silently."""

    @property
    def pairs_per_step(self) -> int:
        """How many pairs the labeler sends per call (and writes to disk per step): few for an
        in-process model, many for engines that batch requests themselves (vLLM, servers)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokens, to fit prompts to ``max_prompt_tokens``."""

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        """How each label tokenizes after ``prompt`` (see ``rlaif.backends.label_tokens``): the direct
        scorer reads from it whether "10".."19" continue the tokens of "1", which decides P(score 1)."""

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) for each prompt and candidate label: shape [len(prompts), len(labels)].

        Normalized over the whole vocabulary, so ``exp`` of a row's sum is the
        probability mass the model puts on the candidates.
        """

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """``n`` continuations of each prompt (greedy at temperature 0), cut at the first stop string.

        Used for chain-of-thought rationales.
        """

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        """``message`` as a user turn in the model's chat template, the reply started with ``reply_prefix``."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything about the engine that changes the numbers (model, revision, dtype, ...)."""


class WrappedBackend:
    """A backend in front of another (the score cache, the dry run's recorder): every member it does
    not define is the wrapped engine's, so the wrapper is a complete ``LabelBackend`` by construction."""

    def __init__(self, backend: LabelBackend):
        self.backend = backend

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.backend.max_prompt_tokens

    @property
    def pairs_per_step(self) -> int:
        return self.backend.pairs_per_step

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return self.backend.continuations(prompt, labels)

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        return self.backend.label_logprobs(prompts, labels)

    def generate(self, prompts: Sequence[str], **options: Any) -> list[list[str]]:
        return self.backend.generate(prompts, **options)

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        return self.backend.chat_prompt(message, reply_prefix)

    def fingerprint(self) -> dict[str, Any]:
        return self.backend.fingerprint()
