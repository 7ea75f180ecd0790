"""Exact label log-probs from engines that answer only the top-k next tokens plus the sampled one."""

import numpy as np
import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaif.backends.label_tokens import Continuation
from rlaif.backends.next_token import MissingLogprobsError, label_logprobs_by_next_token, needed_contexts

VOCAB = 12


def distribution(context):
    """A fixed next-token distribution over VOCAB tokens for each context (log-probs, sums to 1)."""
    rng = np.random.default_rng(abs(hash(tuple(context))) % 2**32)
    logits = rng.normal(size=VOCAB) * 3
    return logits - np.logaddexp.reduce(logits)


class TopKEngine:
    """Answers like vLLM: the sampled token (argmax among the allowed) plus the top ``k`` of the vocabulary."""

    def __init__(self, k, renormalize=False, drop_sampled=False):
        self.k, self.renormalize, self.drop_sampled = k, renormalize, drop_sampled
        self.requests = []

    def __call__(self, requests):
        self.requests.append(list(requests))
        answers = []
        for context, allowed in requests:
            logprobs = distribution(context)
            if self.renormalize:  # an engine that normalizes over the allowed tokens only
                masked = np.full(VOCAB, -np.inf)
                masked[list(allowed)] = logprobs[list(allowed)]
                logprobs = masked - np.logaddexp.reduce(masked[list(allowed)])
            sampled = max(allowed, key=lambda t: logprobs[t])
            top = set(np.argsort(-logprobs)[:self.k].tolist()) | ({sampled} if not self.drop_sampled else set())
            answers.append({int(t): float(logprobs[t]) for t in top})
        return answers


def exact(conts):
    return np.array([[sum(distribution(c.prompt_ids + c.label_ids[:k])[t] for k, t in enumerate(c.label_ids))
                      for c in row] for row in conts])


labels_strategy = st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=3).map(tuple),
                           min_size=2, max_size=5, unique=True)


@settings(max_examples=examples(60), deadline=None)
@given(prompts=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4).map(tuple), min_size=1,
                        max_size=4), labels=labels_strategy, k=st.integers(0, 3))
def test_scores_are_exact_whatever_the_top_k(prompts, labels, k):
    conts = [[Continuation(p, label) for label in labels] for p in prompts]
    engine = TopKEngine(k)
    np.testing.assert_allclose(label_logprobs_by_next_token(conts, engine), exact(conts), atol=1e-12)
    # one request per distinct context in the first round, then only for candidates still missing
    assert len(engine.requests[0]) == len(needed_contexts(conts))
    assert len(engine.requests) <= 2


def test_multi_token_labels_share_their_prefix_contexts():
    conts = [[Continuation((5,), (1,)), Continuation((5,), (1, 0)), Continuation((5,), (2,))]]  # "1", "10", "2"
    assert needed_contexts(conts) == {(5,): {1, 2}, (5, 1): {0}}


def test_an_engine_that_renormalizes_over_the_allowed_tokens_is_refused():
    conts = [[Continuation((3, 4), (1,)), Continuation((3, 4), (2,))]]
    with pytest.raises(MissingLogprobsError, match="renormalized"):
        label_logprobs_by_next_token(conts, TopKEngine(0, renormalize=True))


def test_an_engine_that_does_not_return_the_sampled_token_is_a_clear_error():
    conts = [[Continuation((3, 4), (1,)), Continuation((3, 4), (2,))]]
    with pytest.raises(MissingLogprobsError, match="sampled token"):
        label_logprobs_by_next_token(conts, TopKEngine(0, drop_sampled=True))
