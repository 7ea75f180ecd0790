"""The HTTP backend under a server that answers 200 but wrongly: a body that is not JSON, one that
hangs half-sent, choices that do not fit the request, log-probs for other tokens than asked. Each
ends in a retry or a clear error, never a label read from a wrong answer. Real sockets: the
scripted server in tests/scripted_server.py."""

import json

import httpx
import numpy as np
import pytest

from rlaif.backends.http_backend import HTTPBackendError, OpenAICompatibleBackend, answer_problem
from rlaif.backends.prompt_tokens import load_tokenizer
from tests.scripted_server import ScriptedServer, next_token_logprobs

PROMPTS = ["Which is better? Answer 1 or 2. Answer:", "Rate it from 1 to 10. Score:"]
LABELS = ["1", "2"]
#: Faults where the answer does not fit its request: an error at once, not retried.
MISMATCHES = {
    "fewerchoices": r"0 choices with indices \[\] for a request that asks for 1",
    "morechoices": r"2 choices with indices \[0, 1\] for a request that asks for 1",
    "wrongindex": r"1 choices with indices \[1\] for a request that asks for 1",
    "othertokens": r"it sampled token_id:\d+, which the request did not allow .*ignore allowed_token_ids",
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture
def backend_for(tokenizer):
    def make(server, **options):
        settings = {"tokenizer": tokenizer, "api_key_env": "", "backoff": 0.01, "max_backoff": 0.02,
                    "max_retries": 2, "top_logprobs": 2, "timeout": 0.3, "max_prompt_tokens": 4096, **options}
        return OpenAICompatibleBackend(server.url, "served-model", **settings)
    return make


def clean(backend, prompts):
    """What a well-behaved server's answers give: the rule applied to the label continuations."""
    return np.array([[sum(next_token_logprobs(c.prompt_ids + c.label_ids[:k])[t] for k, t in enumerate(c.label_ids))
                      for c in backend.tokens.continuations(prompt, LABELS)] for prompt in prompts])


@pytest.mark.parametrize("fault, named", [
    ("badjson", r"HTTP 200 but the body was not JSON \(.*\): '\{\"id\": \"x\""),
    ("hangbody", r"ReadTimeout: no progress within the 0.3 s timeout"),
], ids=["badjson", "hangbody"])
def test_a_200_that_is_not_json_or_hangs_half_sent_is_retried_then_named(backend_for, fault, named):
    """A server mid-restart can send either: retried to the clean numbers, else an error naming it."""
    with ScriptedServer(script=[fault], slow_seconds=5) as server:
        backend = backend_for(server)
        got = backend.label_logprobs(PROMPTS, LABELS)
    np.testing.assert_array_equal(got, clean(backend, PROMPTS))
    assert backend.stats["retries"] == 1
    with ScriptedServer(script=[fault] * 10, slow_seconds=5) as server:
        with pytest.raises(HTTPBackendError, match=rf"{server.url}/v1/completions: gave up after 3 attempts; "
                                                   rf"last error: {named}"):
            backend_for(server).label_logprobs(PROMPTS[:1], LABELS)
    assert len(server.seen) == 3


@pytest.mark.parametrize("fault", list(MISMATCHES))
def test_an_answer_that_does_not_fit_the_request_is_an_error_not_retried(backend_for, fault):
    """Choices missing, extra or misnumbered, or log-probs for other tokens: the server answered
    another question, so nothing is read from it and it is not retried; a rerun once the server
    behaves gives the clean numbers."""
    with ScriptedServer(script=[fault]) as server:
        backend = backend_for(server)
        with pytest.raises(HTTPBackendError, match=rf"{server.url}/v1/completions: the answer does not fit the "
                                                   rf"request: {MISMATCHES[fault]}.*not retried"):
            backend.label_logprobs(PROMPTS[:1], LABELS)  # one prompt, one-token labels: one request
        assert len(server.seen) == 1 and backend.stats["retries"] == 0
        np.testing.assert_array_equal(backend.label_logprobs(PROMPTS, LABELS), clean(backend, PROMPTS))
    with ScriptedServer(script=[fault] * 10) as server:
        with pytest.raises(HTTPBackendError, match=MISMATCHES[fault]):
            backend_for(server).label_logprobs(PROMPTS, LABELS)


@pytest.mark.parametrize("fault", ["morechoices", "othertokens"])
def test_the_faults_would_give_wrong_numbers_if_read(backend_for, fault):
    """The scripted faults are the dangerous kind: read naively (the first choice, the top log-probs by
    token id) they give another number than the clean answer, or none for the asked tokens."""
    with ScriptedServer(script=[fault]) as server:
        context = backend_for(server).tokens.continuations(PROMPTS[0], LABELS)[0].prompt_ids
        body = {"model": "m", "prompt": list(context), "max_tokens": 1, "logprobs": 2, "temperature": 0.0,
                "allowed_token_ids": [16, 17], "return_tokens_as_token_ids": True}
        bad, good = (httpx.post(f"{server.url}/v1/completions", json=body, timeout=5).json() for _ in range(2))
    assert answer_problem(body, good) is None and answer_problem(body, bad)
    want = good["choices"][0]["logprobs"]["top_logprobs"][0]
    naive = bad["choices"][0]["logprobs"]["top_logprobs"][0]
    assert all(naive.get(token) != value for token, value in want.items())


def test_a_persistent_fault_mid_run_keeps_the_finished_steps_and_a_rerun_resumes(backend_for, tmp_path):
    """Through the real label path: the steps done before the server went wrong stay in ``out``; the
    rerun against a server that behaves labels the rest, the same as a run without faults."""
    from rlaif.labeler import label_pairs
    from rlaif.loaders import load_pairs
    from rlaif.templates import PromptTemplate

    pairs, template = load_pairs(None, "examples")[:3], PromptTemplate("instruction")
    run = {"progress": False, "pairs_per_step": 1}
    with ScriptedServer() as server:
        label_pairs(pairs[:1], backend_for(server), template, **run)
        first_step = len(server.seen)  # the first pair's requests
    with ScriptedServer() as server:
        want = label_pairs(pairs, backend_for(server), template, **run)
        every_step = len(server.seen)
    out = tmp_path / "labels.jsonl"
    with ScriptedServer(script=["ok"] * first_step + ["badjson"] * 100) as server:
        with pytest.raises(HTTPBackendError, match="not JSON"):
            label_pairs(pairs, backend_for(server), template, out=out, **run)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [pairs[0].id]
    with ScriptedServer() as server:
        got = label_pairs(pairs, backend_for(server), template, out=out, **run)
        assert len(server.seen) == every_step - first_step  # the first pair was not asked again
    np.testing.assert_array_equal(got["p"], want["p"])
    assert list(got["id"]) == [pair.id for pair in pairs]
