"""The OpenAI-compatible backend's HTTP behaviour against a real local server that misbehaves on a
script: exact reads from top-k answers, retries, timeouts, bounded concurrency, clear errors, and
an API key that never leaves the request headers. (Agreement with the transformers backend on a
real vLLM server is tested in test_serving.py.)"""

import logging

import numpy as np
import pytest

from rlaif.backends.http_backend import HTTPBackendError, OpenAICompatibleBackend
from rlaif.backends.next_token import MissingLogprobsError
from rlaif.backends.prompt_tokens import load_tokenizer
from tests.scripted_server import ScriptedServer, next_token_logprobs

KEY = "sk-test-never-print-me-4242"
PROMPTS = ["Which is better? Answer 1 or 2. Answer:", "Rate it from 1 to 10. Score:"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture
def backend_for(tokenizer, monkeypatch):
    monkeypatch.setenv("RLAIF_TEST_KEY", KEY)

    def make(server, **options):
        settings = {"tokenizer": tokenizer, "api_key_env": "RLAIF_TEST_KEY", "backoff": 0.01, "max_backoff": 0.05,
                    "max_retries": 5, "top_logprobs": 2, **options}
        return OpenAICompatibleBackend(server.url, "served-model", **settings)
    return make


def expected(backend, prompts, labels):
    """The server's rule applied to the label continuations: what an exact reader must return."""
    rows = []
    for prompt in prompts:
        rows.append([sum(next_token_logprobs(c.prompt_ids + c.label_ids[:k])[t] for k, t in enumerate(c.label_ids))
                     for c in backend.tokens.continuations(prompt, labels)])
    return np.array(rows)


def test_labels_are_read_exactly_from_a_server_that_answers_only_its_top_tokens(backend_for):
    with ScriptedServer() as server:
        backend = backend_for(server)
        for labels in (["1", "2"], [str(i) for i in range(1, 11)]):  # "10" is two tokens after the prompt
            got = backend.label_logprobs(PROMPTS, labels)
            np.testing.assert_allclose(got, expected(backend, PROMPTS, labels), atol=1e-12)
    bodies = [body for _, _, body in server.seen]
    assert all(body["model"] == "served-model" and body["max_tokens"] == 1 and body["temperature"] == 0
               for body in bodies)
    assert any(len(body["allowed_token_ids"]) == 1 for body in bodies)  # a missing candidate asked again alone


def test_5xx_429_and_dropped_connections_are_retried_and_the_key_never_logged(backend_for, caplog):
    with ScriptedServer(script=[500, "drop", (429, 0), 503, 502]) as server, caplog.at_level(logging.DEBUG):
        backend = backend_for(server)
        got = backend.label_logprobs(PROMPTS, ["1", "2"])
    np.testing.assert_allclose(got, expected(backend, PROMPTS, ["1", "2"]), atol=1e-12)
    assert backend.stats["retries"] == 5
    assert sum("retry" in record.getMessage() for record in caplog.records) == 5
    assert all(headers.get("Authorization") == f"Bearer {KEY}" for _, headers, _ in server.seen)
    assert KEY not in caplog.text
    assert KEY not in repr(vars(backend)) and KEY not in repr(backend.fingerprint())


def test_a_request_that_keeps_failing_gives_up_with_the_last_error(backend_for):
    with ScriptedServer(script=[500] * 10) as server:
        with pytest.raises(HTTPBackendError, match=r"gave up after 3 attempts; last error: HTTP 500"):
            backend_for(server, max_retries=2).label_logprobs(PROMPTS[:1], ["1", "2"])


def test_a_refused_request_fails_at_once_with_the_servers_message(backend_for):
    with ScriptedServer(script=[400]) as server:
        with pytest.raises(HTTPBackendError, match=r"answered HTTP 400: .*scripted 400"):
            backend_for(server).label_logprobs(PROMPTS[:1], ["1", "2"])
    assert len(server.seen) == 1


def test_answers_without_logprobs_are_a_clear_error(backend_for):
    with ScriptedServer(script=["nologprobs"]) as server:
        with pytest.raises(MissingLogprobsError, match="drops them"):
            backend_for(server).label_logprobs(PROMPTS[:1], ["1", "2"])


def test_a_request_that_times_out_is_retried(backend_for):
    with ScriptedServer(script=["slow"], slow_seconds=1.5) as server:
        backend = backend_for(server, timeout=0.5)
        got = backend.label_logprobs(PROMPTS[:1], ["1", "2"])
    np.testing.assert_allclose(got, expected(backend, PROMPTS[:1], ["1", "2"]), atol=1e-12)
    assert backend.stats["retries"] == 1


def test_no_server_at_all_names_the_url_after_the_retries():
    with ScriptedServer() as server:
        url = server.url
    backend = OpenAICompatibleBackend(url, "m", method="chat", backoff=0.01, max_backoff=0.02, max_retries=2)
    with pytest.raises(HTTPBackendError, match=rf"{url}/v1/chat/completions: gave up after 3 attempts; .*Connect"):
        backend.label_logprobs(["hi"], ["1", "2"])


def test_requests_in_flight_are_bounded(backend_for):
    prompts = [f"Prompt number {i}. Answer:" for i in range(12)]
    with ScriptedServer(script=["slow"] * 12, slow_seconds=0.3) as server:
        backend = backend_for(server, max_concurrency=3, top_logprobs=5)
        backend.label_logprobs(prompts, ["1", "2"])
    assert server.most_in_flight == 3


def test_works_inside_a_running_event_loop_as_in_jupyter(backend_for):
    import asyncio

    async def notebook_cell(backend):
        return backend.label_logprobs(PROMPTS[:1], ["1", "2"])  # sync call, loop already running

    with ScriptedServer() as server:
        backend = backend_for(server)
        got = asyncio.run(notebook_cell(backend))
    np.testing.assert_allclose(got, expected(backend, PROMPTS[:1], ["1", "2"]), atol=1e-12)


def test_an_unknown_tokenizer_says_how_to_name_one():
    with pytest.raises(ValueError, match="name the served model's tokenizer"):
        OpenAICompatibleBackend("http://127.0.0.1:9", "my-served-model")


def numbers_tokenizer():
    """A tokenizer whose "10".."19" are tokens of their own (GPT-2 style), unlike SmolLM2's digits:
    digits, teens, "=", space and newline; every other character is <unk>. All ids are below the
    scripted server's 50-token vocabulary."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    teens = [str(k) for k in range(10, 20)]
    vocab = {token: i for i, token in enumerate(["<unk>", *"0123456789", *teens, "=", " ", "\n"])}
    merges = [("1", teen[1]) for teen in teens]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, merges, unk_token="<unk>")),
                                   unk_token="<unk>")


def test_direct_scores_over_http_read_the_served_tokenizer_where_ten_is_one_token():
    """With "10" one token, the token "1" already means "1 and stop": P(score 1) = P("1"), nothing taken
    away for "10".."19" (the scorer asks the backend how the labels tokenize)."""
    from rlaif.direct_scores import SCORE_LABELS, TEENS, DirectScorer
    from rlaif.templates import PromptTemplate

    tokenizer = numbers_tokenizer()
    prompt = PromptTemplate("instruction").render_score("Say hi", "hello").text  # what the scorer sends
    assert prompt.endswith("=")
    # by hand: every candidate is one token after the prompt, read from the rule's one distribution
    table = next_token_logprobs(tokenizer(prompt)["input_ids"])
    p = {label: np.exp(table[tokenizer.convert_tokens_to_ids(label)]) for label in SCORE_LABELS + TEENS}
    ten = np.array([p[label] for label in SCORE_LABELS])
    assert p["1"] / ten.sum() > 0.05 and sum(p[label] for label in ("10", *TEENS)) > 0.05  # the case matters
    want = ten / ten.sum() @ np.arange(1, 11)
    with ScriptedServer() as server:
        backend = OpenAICompatibleBackend(server.url, "served-model", tokenizer=tokenizer, top_logprobs=2,
                                          max_prompt_tokens=4096)
        got = DirectScorer(backend, PromptTemplate("instruction")).score(["Say hi"], ["hello"])
    assert got["distribution"][0, 0] == pytest.approx(p["1"] / ten.sum(), abs=1e-12)
    assert got["score"][0] == pytest.approx(want, abs=1e-12)
