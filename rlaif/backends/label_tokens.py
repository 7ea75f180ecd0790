"""Which tokens a label adds after a prompt, and which forward passes score all labels at once.

Boundary rule. A label is scored as the continuation of the prompt:
1. tokenize ``prompt`` and ``prompt + label``; if the first is a prefix of the
   second, the label's tokens are the rest (the tokens the model would emit);
2. otherwise, if the prompt ends in whitespace, move that whitespace into the label
   (``"Score: " + "1"`` becomes ``"Score:" + " 1"``, as a model that writes " 1" as
   one token would) and try step 1 again;
3. otherwise the label merges with the end of the prompt and cannot be scored as
   written: LabelTokenError.

Scoring plan. Candidates' token sequences form a tree below the prompt. Every
distribution needed is the next-token distribution after the prompt plus some
proper prefix of a candidate, so one sequence per maximal such prefix ("chain"),
with logits kept at its last positions, scores every candidate: "1".."9" and "10"
need only prompt + "1" (one pass), "A"/"B" only the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


class LabelTokenError(ValueError):
    """A candidate label that merges with the end of the prompt when tokenized, so it cannot be scored."""


Encode = Callable[[str], list[int]]


@dataclass(frozen=True)
class Continuation:
    prompt_ids: tuple[int, ...]
    label_ids: tuple[int, ...]


def continuation(encode: Encode, prompt: str, label: str) -> Continuation:
    """The prompt's tokens and the label's tokens after them, by the boundary rule above."""
    attempts = [(prompt, label)]
    stripped = prompt.rstrip()
    if stripped != prompt:
        attempts.append((stripped, prompt[len(stripped):] + label))
    for context, suffix in attempts:
        context_ids, joined = encode(context), encode(context + suffix)
        if len(joined) > len(context_ids) and joined[:len(context_ids)] == context_ids:
            return Continuation(tuple(context_ids), tuple(joined[len(context_ids):]))
    raise LabelTokenError(
        f"label {label!r} merges with the end of the prompt {prompt[-30:]!r} when tokenized, so it cannot "
        "be scored as a continuation; end the prompt with a character that stays its own token (e.g. '=')")


@dataclass(frozen=True)
class Chain:
    """One sequence to run: the prompt plus a label prefix; distributions are read at its last positions."""

    prompt_ids: tuple[int, ...]
    prefix: tuple[int, ...]


def plan(continuations: Sequence[Continuation]) -> tuple[list[Chain], list[list[tuple[int, int, int]]]]:
    """Chains to run, and for each candidate its (chain index, position after the prompt, token) steps.

    Position k means "the distribution after the prompt and k label tokens".
    """
    prefixes: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for cont in continuations:
        own = prefixes.setdefault(cont.prompt_ids, set())
        own.update(cont.label_ids[:k] for k in range(len(cont.label_ids)))
    chains: list[Chain] = []
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for prompt_ids, proper in prefixes.items():
        maximal = [p for p in proper if not any(len(q) > len(p) and q[:len(p)] == p for q in proper)]
        for prefix in sorted(maximal):
            index[(prompt_ids, prefix)] = len(chains)
            chains.append(Chain(prompt_ids, prefix))
    steps = []
    for cont in continuations:
        # the longest chain extending this candidate's proper prefixes holds all its distributions
        chain_id = next(i for (prompt_ids, prefix), i in index.items()
                        if prompt_ids == cont.prompt_ids and prefix[:len(cont.label_ids) - 1] == cont.label_ids[:-1])
        steps.append([(chain_id, k, token) for k, token in enumerate(cont.label_ids)])
    return chains, steps
