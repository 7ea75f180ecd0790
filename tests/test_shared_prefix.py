"""The shared-prefix plan and token-capped batches (pure functions), and the backend's reuse of
key/value caches on tiny random models of three architectures, against each model's own forward."""

import numpy as np
import pytest
import torch
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaif.backends.batching import token_batches
from rlaif.backends.shared_prefix import prefix_tree


def walk(node, start=0, path=()):
    """(node, its segment start, the nodes above it) for every node."""
    yield node, start, path
    for child in node.children:
        yield from walk(child, node.end, path + (node,))


def test_a_job_prefix_and_pair_contexts_become_two_levels():
    job, contexts = list(range(100, 140)), [list(range(200, 240)), list(range(300, 305))]
    sequences = []
    for context in contexts:
        for response in ([1, 2, 3], [4, 5]):
            sequences.append(job + context + response)
    tree = prefix_tree(sequences, [1] * 4, min_shared=8)
    assert tree.end == 40  # the job's prefix
    # the first pair shares 40 more tokens: a node of its own; the second pair's 5 are too few
    assert [(child.end, child.leaves) for child in tree.children] == [(80, [0, 1])]
    assert tree.leaves == [2, 3]


def test_read_positions_are_never_shared_and_a_short_common_prefix_is_not_a_pass():
    sequences = [[7] * 50 + [1], [7] * 50 + [1, 2, 3]]
    tree = prefix_tree(sequences, [3, 1], min_shared=8)
    assert tree.end == 48  # sequence 0 reads its last three positions, so they run in its leaf pass
    assert prefix_tree([[1, 2, 3, 9], [1, 2, 3, 8]], [1, 1], min_shared=8).end == 0


def test_bad_reads_are_refused():
    with pytest.raises(ValueError, match="read"):
        prefix_tree([[1, 2]], [3])
    with pytest.raises(ValueError, match="sequences"):
        prefix_tree([[1, 2]], [1, 1])


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=12), min_size=1, max_size=12),
       st.integers(1, 4), st.data())
def test_prefix_tree_covers_every_sequence_once_with_true_shares(sequences, min_shared, data):
    reads = [data.draw(st.integers(1, len(s))) for s in sequences]
    tree = prefix_tree(sequences, reads, min_shared)
    leaves = [i for node, _, _ in walk(tree) for i in node.leaves]
    assert sorted(leaves) == list(range(len(sequences)))
    for node, start, path in walk(tree):
        under = [i for sub, _, _ in walk(node) for i in sub.leaves]
        segment = sequences[node.first][:node.end]
        assert node.first in under
        for i in under:  # everything below a node really starts with its tokens, reads excluded
            assert sequences[i][:node.end] == segment and len(sequences[i]) - reads[i] >= node.end
        if path:
            assert node.end - start >= min_shared  # every pass of its own is worth it
    assert tree.end == 0 or tree.end >= min_shared


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.integers(1, 50), max_size=30), st.integers(1, 200), st.one_of(st.none(), st.integers(1, 5)),
       st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_token_batches_respect_every_cap_and_lose_nothing(lengths, max_tokens, max_rows, max_padding):
    batches = token_batches(lengths, max_tokens, max_rows, max_padding)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= max_tokens
        assert max_rows is None or len(batch) <= max_rows
        assert all(lengths[i] >= (1 - max_padding) * longest for i in batch)


def test_token_batches_fill_up_to_the_budget():
    assert token_batches([10, 10, 10, 10, 9], max_tokens=30) == [[0, 1, 2], [3, 4]]
    assert token_batches([10, 5], max_tokens=100, max_padding=0.1) == [[0], [1]]
    with pytest.raises(ValueError):
        token_batches([1], max_tokens=0)


# ---------------------------------------------------------------- tiny random models


class NoTokenizer:
    """The backend's scoring core works on token ids; it needs only a pad id from the tokenizer."""

    pad_token_id, eos_token_id, bos_token = 0, 0, None


def tiny(architecture: str):
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    if architecture == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    # sliding-window layers (window 8, shorter than the prefixes) and a logit soft cap
    return Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=16, sliding_window=8, final_logit_softcapping=0.05,
                                              layer_types=["sliding_attention", "full_attention",
                                                           "sliding_attention"])).eval()


def labeling_like(seed: int, pairs: int = 5):
    """Token sequences shaped like a labeling job: a job prefix, per pair a context, then two orders."""
    rng = np.random.default_rng(seed)
    draw = lambda low, high: rng.integers(1, 300, rng.integers(low, high)).tolist()  # noqa: E731
    job, sequences = draw(40, 41), []
    for _ in range(pairs):
        context, a, b = draw(2, 40), draw(1, 12), draw(1, 12)
        sequences += [job + context + a + b + [5], job + context + b + a + [5]]
    return sequences + [draw(3, 9)]  # and one that shares nothing


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gemma3"])
def test_shared_prefix_scoring_equals_each_model_run_whole(architecture):
    from rlaif.backends.transformers_backend import TransformersBackend

    model = tiny(architecture)
    backend = TransformersBackend(model, NoTokenizer(), name="tiny", max_batch_tokens=64, min_shared_prefix=4)
    whole = TransformersBackend(model, NoTokenizer(), name="tiny", share_prefixes=False)
    sequences = labeling_like(0)
    reads = [1 + i % 3 for i in range(len(sequences))]
    shared, reference = backend._logprobs_at_end(sequences, reads), whole._logprobs_at_end(sequences, reads)
    with torch.no_grad():
        for ids, n, got, ref in zip(sequences, reads, shared, reference):
            own = torch.log_softmax(model(torch.tensor([ids])).logits[0, -n:].float(), -1)
            assert got.shape == own.shape == ref.shape
            assert (got - own).abs().max() < 1e-4 and (ref - own).abs().max() < 1e-4
    assert backend.stats["tokens"] < whole.stats["tokens"]  # the job prefix and contexts ran once
    assert whole.stats["tokens"] == sum(map(len, sequences))


def test_the_next_call_reuses_remembered_prefixes_and_still_agrees():
    from rlaif.backends.transformers_backend import TransformersBackend

    model = tiny("llama")
    backend = TransformersBackend(model, NoTokenizer(), name="tiny", min_shared_prefix=4)
    first, second = labeling_like(1), labeling_like(1, pairs=7)[10:]  # the same job prefix, new pairs
    backend._logprobs_at_end(first, [1] * len(first))
    before = backend.stats["tokens"]
    again = backend._logprobs_at_end(second, [1] * len(second))
    fresh = TransformersBackend(model, NoTokenizer(), name="tiny", min_shared_prefix=4)
    reference = fresh._logprobs_at_end(second, [1] * len(second))
    assert max(float((a - b).abs().max()) for a, b in zip(again, reference)) < 1e-5
    assert backend.stats["tokens"] - before == fresh.stats["tokens"] - 40  # the 40-token job prefix was remembered
    off = TransformersBackend(model, NoTokenizer(), name="tiny", min_shared_prefix=4, prefix_cache_entries=0)
    off._logprobs_at_end(first, [1] * len(first))
    assert not off._remembered


def test_no_prompts_give_an_empty_table():
    from rlaif.backends.transformers_backend import TransformersBackend

    assert TransformersBackend(tiny("llama"), NoTokenizer(), name="tiny").label_logprobs([], ["1", "2"]).shape == (0, 2)


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gemma3"])
def test_on_the_mixed_precision_path_shared_prefixes_stay_near_each_model_run_whole(architecture):
    """bf16 products round differently with batch shapes, so the mixed path is not exactly batch-invariant;
    the shared-prefix caches (fp32) and the whole runs stay within what bf16 products move, and near fp32."""
    from rlaif.backends.cpu_precision import to_mixed_precision
    from rlaif.backends.transformers_backend import TransformersBackend

    exact = tiny(architecture)
    model = to_mixed_precision(tiny(architecture))
    backend = TransformersBackend(model, NoTokenizer(), name="tiny", max_batch_tokens=64, min_shared_prefix=4)
    whole = TransformersBackend(model, NoTokenizer(), name="tiny", share_prefixes=False)
    reference = TransformersBackend(exact, NoTokenizer(), name="tiny", share_prefixes=False)
    sequences = labeling_like(0)
    reads = [1 + i % 3 for i in range(len(sequences))]
    shared, run_whole, fp32 = (b._logprobs_at_end(sequences, reads) for b in (backend, whole, reference))
    assert backend.precision == "mixed" and reference.precision == "float32"
    assert max(float((a - b).abs().max()) for a, b in zip(shared, run_whole)) < 5e-3
    assert max(float((a - b).abs().max()) for a, b in zip(shared, fp32)) < 2e-2
    assert any(not torch.equal(a, b) for a, b in zip(shared, fp32))  # the products did run in bf16
