"""Exact label log-probs from engines that return only a few next-token log-probs per request.

Serving engines (vLLM in-process or behind an HTTP server) answer "the next token's
log-probs" for the top k tokens plus the one they sampled. Relying on the top k is
luck: a small labeler often ranks "1"/"2" far down. Instead:

1. every distribution a label needs is "the next token after the prompt plus a proper
   prefix of the label" (a *context*); each context is asked once, with the next token
   restricted to the candidates it needs (vLLM's ``allowed_token_ids``), so the sampled
   token is a candidate and its log-prob always comes back;
2. a candidate still missing from the answer is asked again alone (only that token
   allowed, so it is the one sampled); with prefix caching this costs one token.

This needs the *raw* log-probs, normalized over the whole vocabulary before the
restriction (vLLM's default ``logprobs_mode``). An engine that renormalizes over the
allowed tokens would give every forced token probability 1; that is detected and refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rlaif.backends.label_tokens import Continuation

Context = tuple[int, ...]
#: (context token ids, allowed next-token ids) -> {token id: log-prob} for at least the sampled token.
Ask = Callable[[Sequence[tuple[Context, Sequence[int]]]], list[dict[int, float]]]


class MissingLogprobsError(RuntimeError):
    """The engine or server did not return the log-probs scoring needs (some proxies drop them)."""


def needed_contexts(conts: Sequence[Sequence[Continuation]]) -> dict[Context, set[int]]:
    """Each context (prompt plus a proper label prefix) and the next tokens wanted after it."""
    needed: dict[Context, set[int]] = {}
    for row in conts:
        for cont in row:
            for k, token in enumerate(cont.label_ids):
                needed.setdefault(cont.prompt_ids + cont.label_ids[:k], set()).add(token)
    return needed


def label_logprobs_by_next_token(conts: Sequence[Sequence[Continuation]], ask: Ask) -> np.ndarray:
    """log P(label | prompt) for each row's candidates, [rows, labels], from next-token requests."""
    needed = needed_contexts(conts)
    contexts = list(needed)
    answers = ask([(context, sorted(needed[context])) for context in contexts])
    found = {context: {t: lp for t, lp in answer.items() if t in needed[context]}
             for context, answer in zip(contexts, answers)}
    missing = [(context, token) for context in contexts for token in sorted(needed[context])
               if token not in found[context]]
    if missing:
        for (context, token), answer in zip(missing, ask([(context, [token]) for context, token in missing])):
            if token not in answer:
                raise MissingLogprobsError(
                    f"asked for token {token} alone after a {len(context)}-token prompt, the answer held no "
                    f"log-prob for it (got tokens {sorted(answer)[:5]}); the server must return the sampled "
                    "token's log-prob")
            found[context][token] = answer[token]
    for context, values in found.items():
        total = float(np.exp(np.logaddexp.reduce(list(values.values()))))
        if total > 1 + 1e-3:
            raise MissingLogprobsError(
                f"the candidates' probabilities after one prompt add up to {total:.3f} > 1: the engine "
                "returns log-probs renormalized over the allowed tokens, not over the vocabulary; use vLLM's "
                "default logprobs_mode (raw_logprobs)")
    return np.array([[sum(found[cont.prompt_ids + cont.label_ids[:k]][token] for k, token in enumerate(cont.label_ids))
                      for cont in row] for row in conts], dtype=np.float64)
