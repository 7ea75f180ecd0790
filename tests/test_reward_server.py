"""``rlaif serve`` as a real server process (``python -m rlaif.cli serve`` on a free local port, the real
SmolLM2-135M in fp32) against the same scorer and labeler in this process: equal rewards and labels,
64 concurrent clients each getting its own answer, malformed requests refused with the field named
(and the server still answering after them), a full queue answered 429 + Retry-After and retried
through by ``RemoteReward``, and one GRPO step in TRL against the server."""

import math
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from rlaif.backends.http_backend import HTTPBackendError  # noqa: E402
from rlaif.backends.transformers_backend import TransformersBackend  # noqa: E402
from rlaif.direct_scores import DirectScorer  # noqa: E402
from rlaif.labeler import label_pairs  # noqa: E402
from rlaif.labels_table import pair_hash  # noqa: E402
from rlaif.loaders import load_pairs  # noqa: E402
from rlaif.templates import PromptTemplate  # noqa: E402
from rlaif.training.rewards import RemoteReward, reward_from_spec  # noqa: E402

pytestmark = pytest.mark.model
MODEL, TASK = "smollm2-135m", "instruction"
MAX_CHARS = 20_000
#: Same request, same batch: the server runs exactly the in-process call, so the numbers agree to float noise.
SAME_BATCH = 1e-6
#: Concurrent requests are batched with whatever else is waiting: fp32 padding in other batch shapes moves a
#: reward by ~3e-6 (measured); answers mixed up between requests differ by far more (checked in the test).
OTHER_BATCH = 2e-5
#: torch threads, here and in the servers: the thread count changes fp32 sums by ~3e-6 (measured), and three
#: processes with two threads each on a small machine spend their time waiting for each other.
THREADS = 1


class RewardServer:
    """``python -m rlaif.cli serve`` on a free port of 127.0.0.1, its output in ``log``."""

    def __init__(self, log: Path, *options: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{self.port}", log
        command = [sys.executable, "-m", "rlaif.cli", "serve", "--task", TASK, "--model", MODEL, "--dtype", "float32",
                   "--port", str(self.port), "--max-chars", str(MAX_CHARS), "--log-level", "warning", *options]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(THREADS)})

    def wait(self, timeout: float = 400) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rlaif serve exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"rlaif serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The main server (defaults) and a small one (one request may wait, two prompts per step, a score
    cache), started together so that they load while this process loads its own copy of the model."""
    folder = tmp_path_factory.mktemp("serve")
    main = RewardServer(folder / "main.log")
    small = RewardServer(folder / "small.log", "--max-queue", "1", "--max-batch", "2", "--cache",
                         str(folder / "scores.sqlite"))
    try:
        yield main, small
    finally:
        main.stop()
        small.stop()


@pytest.fixture(scope="module")
def server(servers):
    servers[0].wait()
    return servers[0]


@pytest.fixture(scope="module")
def small_server(servers):
    servers[1].wait()
    return servers[1]


@pytest.fixture(scope="module")
def local(servers):
    """The scorer and labeler in this process, with the server's settings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    backend = TransformersBackend.from_pretrained(MODEL, dtype="float32")
    template = PromptTemplate(TASK)
    yield DirectScorer(backend, template, chat_template=True), backend, template
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llmbar(shared_data):
    """Four real LLMBar Natural pairs, those of the first eight with short instructions (the model's work is small)."""
    pairs = load_pairs(shared_data / "llmbar" / "LLMBar_Natural", "llmbar", limit=8)
    return [pairs[i] for i in (1, 2, 3, 5)]


@pytest.fixture(scope="module")
def short_items(shared_data):
    """64 different (context, response) from real HH-RLHF pairs, cut short to keep the model's work small."""
    pairs = load_pairs(shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz", "hh-rlhf", limit=32)
    return [(pair.context[-120:], response[:80]) for pair in pairs for response in (pair.response_1, pair.response_2)]


def get_reward(url: str, items, **extra) -> httpx.Response:
    body = {"query": [c + r for c, r in items], "prompts": [c for c, _ in items], **extra}
    return httpx.post(f"{url}/get_reward", json=body, timeout=600)


# ---------------------------------------------------------------- (a) the same numbers as in process


def test_rewards_equal_the_in_process_direct_scorer(server, local, llmbar):
    scorer = local[0]
    contexts = [pair.context for pair in llmbar for _ in (1, 2)]
    responses = [r for pair in llmbar for r in (pair.response_1, pair.response_2)]
    expected = scorer.score(contexts, responses)
    answer = get_reward(server.url, list(zip(contexts, responses)), labels=[None] * len(contexts))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    np.testing.assert_allclose(body["rewards"], expected["reward"], atol=SAME_BATCH, rtol=0)
    assert body["scores"] == body["rewards"]  # OpenRLHF's dynamic filtering reads "scores"
    np.testing.assert_allclose(body["extra_logs"]["direct_score"], expected["score"], atol=4.5 * SAME_BATCH, rtol=0)
    np.testing.assert_allclose(body["extra_logs"]["score_mass"], expected["mass"], atol=SAME_BATCH, rtol=0)
    assert np.ptp(expected["reward"]) > 0.01  # the responses are told apart, so a shuffled answer would fail
    # the TRL client sends the same texts: the same rewards, and chat messages join as DirectScorer joins them
    remote = RemoteReward(server.url)
    np.testing.assert_allclose(remote(contexts, responses), expected["reward"], atol=SAME_BATCH, rtol=0)
    prompts = [[{"role": "user", "content": c}] for c in contexts[:3]]
    prompts[2] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                  {"role": "user", "content": contexts[2]}]
    completions = [[{"role": "assistant", "content": r}] for r in responses[:3]]
    np.testing.assert_allclose(remote(prompts, completions), scorer(prompts, completions), atol=SAME_BATCH, rtol=0)
    assert remote.stats == {"requests": 2, "retries": 0}


def test_pairwise_labels_equal_label_pairs(server, local, llmbar):
    _, backend, template = local
    pairs = llmbar
    expected = label_pairs(pairs, backend, template, chat_template=True, progress=False).to_dict("records")
    body = {"pairs": [{"context": p.context, "response_1": p.response_1, "response_2": p.response_2, "id": p.id}
                      for p in pairs]}
    answer = httpx.post(f"{server.url}/pairwise", json=body, timeout=600)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["labels"]
    assert [row["id"] for row in rows] == [pair.id for pair in pairs]
    for row, want, pair in zip(rows, expected, pairs):
        assert row["pair_hash"] == pair_hash(replace(pair, human_choice=None))  # the server is not told people's choice
        for key in ("p", "p_first_order", "p_swapped_order", "mass_first_order", "mass_swapped_order"):
            assert row[key] == pytest.approx(want[key], abs=SAME_BATCH), key
        np.testing.assert_allclose(row["logprobs_first_order"] + row["logprobs_swapped_order"],
                                   want["logprobs_first_order"] + want["logprobs_swapped_order"], atol=1e-5, rtol=0)
        for key in ("ai_choice", "position_first_order", "position_swapped_order", "run_id", "model", "template",
                    "labels", "flags", "length_1", "length_2"):
            assert row[key] == want[key], key
    assert server.health()["pairwise_run_id"] == expected[0]["run_id"]
    # one pair alone: the same row as label_pairs on that pair alone
    pair = llmbar[1]
    alone = httpx.post(f"{server.url}/pairwise", json={"context": pair.context, "response_1": pair.response_1,
                                                       "response_2": pair.response_2}, timeout=600).json()
    want = label_pairs([pair], backend, template, chat_template=True, progress=False).iloc[0]
    assert alone["id"] == "0" and alone["p"] == pytest.approx(want["p"], abs=SAME_BATCH)
    assert alone["p_first_order"] == pytest.approx(want["p_first_order"], abs=SAME_BATCH)


def test_health_names_the_model_and_its_settings(server):
    health = server.health()
    assert health["model"] == MODEL and health["task"] == TASK and health["chat_template"] is True
    assert health["fingerprint"]["dtype"] == "float32" and health["fingerprint"]["direct_scoring"] == TASK
    assert health["queue"]["max_batch"] == 64 and health["queue"]["max_queue"] == 256
    assert health["cache"] is None


# ---------------------------------------------------------------- (b) concurrent clients


def test_64_concurrent_clients_each_get_their_own_answer(server, local, short_items):
    scorer = local[0]
    expected = scorer.score([c for c, _ in short_items], [r for _, r in short_items])
    # a mix-up between two requests must be visible: every item differs from every other by more than the noise
    signature = np.stack([expected["reward"], expected["mass"]], axis=1)
    gaps = np.abs(signature[:, None, :] - signature[None, :, :]).max(axis=2) + np.eye(len(signature))
    assert gaps.min() > 4 * OTHER_BATCH
    requests = [[k] if k % 2 == 0 else [k, (k + 7) % 64] for k in range(64)]  # 1 or 2 items each
    before = server.health()["served"]
    start = threading.Barrier(len(requests) + 1)
    seen_running = []

    def client(indices):
        start.wait()
        return get_reward(server.url, [short_items[i] for i in indices])

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client, indices) for indices in requests]
        start.wait()
        while not all(future.done() for future in futures):  # the event loop answers while the model works
            queue = httpx.get(f"{server.url}/health", timeout=30).json()["queue"]
            seen_running.append(queue["running"] > 0 and queue["waiting"] > 0)
            time.sleep(0.2)
        answers = [future.result() for future in futures]
    for indices, answer in zip(requests, answers):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        np.testing.assert_allclose(body["rewards"], expected["reward"][indices], atol=OTHER_BATCH, rtol=0)
        np.testing.assert_allclose(body["extra_logs"]["score_mass"], expected["mass"][indices], atol=OTHER_BATCH,
                                   rtol=0)
    after = server.health()["served"]
    assert after["requests"] - before["requests"] == 64 and after["items"] - before["items"] == 96
    assert after["batches"] - before["batches"] < 64 / 2  # requests were batched into shared backend steps
    assert any(seen_running)


# ---------------------------------------------------------------- (c) malformed requests


def body_of(items):
    return {"query": [c + r for c, r in items], "prompts": [c for c, _ in items]}


GOOD = [("Name a colour.", " Blue."), ("Name a fruit.", " An apple.")]
PAIR = {"context": "Say hi.", "response_1": "Hello!", "response_2": "Go away."}
MALFORMED = {
    "not JSON": ("/get_reward", b"{query: [", 400, "body"),
    "not an object": ("/get_reward", [1, 2], 422, "body"),
    "missing query": ("/get_reward", {"prompts": ["a"]}, 422, "query"),
    "missing prompts": ("/get_reward", {"query": ["a"]}, 422, "prompts"),
    "query not a list": ("/get_reward", {"query": "ab", "prompts": ["a"]}, 422, "query"),
    "query item not a string": ("/get_reward", {"query": ["ab", 7], "prompts": ["a", "b"]}, 422, "query[1]"),
    "prompt item null": ("/get_reward", {"query": ["ab", "bc"], "prompts": ["a", None]}, 422, "prompts[1]"),
    "lengths differ": ("/get_reward", {"query": ["ab", "bc"], "prompts": ["a"]}, 422, "prompts"),
    "labels length differs": ("/get_reward", {**body_of(GOOD), "labels": ["x"]}, 422, "labels"),
    "query without its prompt": ("/get_reward", {"query": ["ab", "xy"], "prompts": ["a", "b"]}, 422, "query[1]"),
    "oversize text": ("/get_reward", {"query": ["a", "b" * (MAX_CHARS + 1)], "prompts": ["a", "b"]}, 413,
                      "query[1]"),
    "too many queries": ("/get_reward", {"query": ["a"] * 4097, "prompts": ["a"] * 4097}, 413, "query"),
    "pair field missing": ("/pairwise", {"context": "a", "response_1": "b"}, 422, "response_2"),
    "pair field misspelt": ("/pairwise", {**PAIR, "respones_1": "b"}, 422, "respones_1"),
    "pair text not a string": ("/pairwise", {"pairs": [PAIR, {**PAIR, "response_1": ["b"]}]}, 422,
                               "pairs[1].response_1"),
    "pair not an object": ("/pairwise", {"pairs": [PAIR, "a pair"]}, 422, "pairs[1]"),
    "pairs not a list": ("/pairwise", {"pairs": {"0": PAIR}}, 422, "pairs"),
    "pair id not a string": ("/pairwise", {**PAIR, "id": 3}, 422, "id"),
    "oversize pair text": ("/pairwise", {**PAIR, "context": "c" * (MAX_CHARS + 1)}, 413, "context"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_refused_naming_the_field(server, case):
    path, body, status, field = MALFORMED[case]
    if isinstance(body, bytes):
        answer = httpx.post(f"{server.url}{path}", content=body, timeout=60)
    else:
        answer = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["field"] == field and error["error"].startswith(f"{field}: "), error


def test_wrong_paths_and_methods_say_what_the_server_answers(server):
    for answer, status in ((httpx.get(f"{server.url}/get_reward", timeout=60), 405),
                           (httpx.post(f"{server.url}/reward", json={}, timeout=60), 404)):
        assert answer.status_code == status
        assert "POST /get_reward, POST /pairwise, GET /health" in answer.json()["error"]


def test_after_the_malformed_requests_the_server_still_answers_correctly(server, local):
    assert server.process.poll() is None
    answer = get_reward(server.url, GOOD)
    assert answer.status_code == 200, answer.text
    expected = local[0]([c for c, _ in GOOD], [r for _, r in GOOD])
    np.testing.assert_allclose(answer.json()["rewards"], expected, atol=SAME_BATCH, rtol=0)
    assert server.health()["served"]["failed_requests"] == 0  # refused requests never reached the model


# ---------------------------------------------------------------- (d) a full queue


def test_a_full_queue_answers_429_and_remote_reward_retries_through_it(small_server, local, short_items):
    scorer = local[0]
    burst = [short_items[2 * k:2 * k + 2] for k in range(8)]
    start = threading.Barrier(len(burst))

    def client(items):
        start.wait()
        return get_reward(small_server.url, items)

    with ThreadPoolExecutor(len(burst)) as pool:
        answers = list(pool.map(client, burst))
    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]  # one runs, one waits (--max-queue 1), the rest are refused
    assert all(a.headers["Retry-After"].isdigit() and int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert all(a.status_code in (200, 429) for a in answers)
    for items, answer in zip(burst, answers):
        if answer.status_code == 200:
            want = scorer([c for c, _ in items], [r for _, r in items])
            np.testing.assert_allclose(answer.json()["rewards"], want, atol=OTHER_BATCH, rtol=0)

    # the TRL client retries 429s (after Retry-After) until each of 6 simultaneous calls is answered
    remote = RemoteReward(small_server.url, max_retries=40, max_backoff=2.0)
    calls = [short_items[16 + 2 * k:18 + 2 * k] for k in range(6)]
    start = threading.Barrier(len(calls))

    def call(items):
        start.wait()
        return remote([c for c, _ in items], [r for _, r in items])

    with ThreadPoolExecutor(len(calls)) as pool:
        got = list(pool.map(call, calls))
    assert remote.stats["retries"] > 0
    for items, rewards in zip(calls, got):
        want = scorer([c for c, _ in items], [r for _, r in items])
        np.testing.assert_allclose(rewards, want, atol=OTHER_BATCH, rtol=0)

    # the score cache: asked again, the same prompts come from disk with the same numbers
    hits = small_server.health()["cache"]["hits"]
    again = remote([c for c, _ in calls[0]], [r for _, r in calls[0]])
    assert again == got[0] and small_server.health()["cache"]["hits"] == hits + 2


def test_a_refused_request_is_not_retried_and_says_why(server):
    remote = RemoteReward(server.url)
    with pytest.raises(HTTPBackendError, match=r"HTTP 422: .*prompts"):
        remote.post({"query": ["a"]})
    assert remote.stats == {"requests": 1, "retries": 0}
    assert reward_from_spec("judge", {"remote": server.url}).__name__ == "judge"


# ---------------------------------------------------------------- (e) GRPO in TRL against the server


def test_one_grpo_step_in_trl_with_the_remote_reward(server, local, tmp_path):
    pytest.importorskip("trl")
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlaif.backends.prompt_tokens import load_tokenizer
    from rlaif.training.policy_training import train_online

    tokenizer = load_tokenizer(MODEL)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    policy = tmp_path / "tiny"
    LlamaForCausalLM(config).save_pretrained(policy)
    tokenizer.save_pretrained(policy)

    class Recorded(RemoteReward):
        calls = []

        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            self.calls.append((list(prompts), list(completions), rewards))
            return rewards

    reward = Recorded(server.url, name="remote_judge")
    prompts = [f"\n\nHuman: question {i}\n\nAssistant:" for i in range(4)]
    _, log = train_online(str(policy), reward, prompts, trainer="grpo", output_dir=tmp_path / "run",
                          settings={"num_generations": 2, "per_device_train_batch_size": 2,
                                    "max_completion_length": 5, "max_steps": 1, "beta": 0.05,
                                    "learning_rate": 1e-3, "seed": 0})
    assert list(log["step"]) == [1]
    assert reward.calls and all(len(c) == len(r) for _, c, r in reward.calls)
    for called_prompts, completions, rewards in reward.calls:
        assert all(math.isfinite(r) for r in rewards)
        np.testing.assert_allclose(rewards, local[0](called_prompts, completions), atol=SAME_BATCH, rtol=0)
    logged = [r for _, _, rewards in reward.calls for r in rewards]
    assert log["rewards/remote_judge/mean"].iloc[0] == pytest.approx(np.mean(logged), abs=1e-5)
