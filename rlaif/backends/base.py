"""The interface every labeling engine implements (transformers now; vLLM and HTTP servers later)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


class LabelTokenError(ValueError):
    """A candidate label that merges with the end of the prompt when tokenized, so it cannot be scored."""


@runtime_checkable
class LabelBackend(Protocol):
    """What the labeler needs from an engine.

    Optional, for the context-length policy (see rlaif.labeler): an attribute
    ``max_prompt_tokens`` (int or None) and a method ``count_tokens(texts) -> list[int]``.
    """

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
