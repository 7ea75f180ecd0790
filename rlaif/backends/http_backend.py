"""Labeling through a server that speaks the OpenAI API: vLLM's ``vllm serve``, and others.

Three ways to read label log-probs, by what the server offers (``method``):

- ``allowed_tokens`` (vLLM servers; the default): ``/v1/completions`` with token-id
  prompts, the next token restricted to the candidates (``allowed_token_ids``), and
  tokens returned as ids. Exact for any label set (see ``rlaif.backends.next_token``).
- ``echo`` (completion servers that echo prompt log-probs): each candidate is sent
  appended to the prompt with ``echo``; its tokens' log-probs are summed. Exact, one
  request per candidate, no server extensions needed.
- ``chat`` (servers with only ``/v1/chat/completions``): the prompt is the user's
  message (the server applies its own chat template) and each label is found by its
  text among the first answer token's ``top_logprobs``. A label outside them is an
  error, not a guess.

Requests run concurrently (``max_concurrency`` in flight), each with a timeout, and
are retried with exponential backoff on 429, 5xx, dropped connections, timeouts (also a
body that stalls half-sent) and a 200 whose body is not JSON (a server mid-restart or a
proxy's error page). Every answer is checked against its request before it is read
(``answer_problem``); one that does not fit (choices missing, extra or misnumbered, a
sampled token the request did not allow) fails at once: a server that answers another
question is not having a transient problem, and no label is read from it. The API
key is read from the environment variable ``api_key_env`` when a request is made; it
is never stored on the backend, logged, or written to any output.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from rlaif.backends.base import cut_at_stop
from rlaif.backends.label_tokens import Continuation
from rlaif.backends.next_token import Context, MissingLogprobsError, label_logprobs_by_next_token
from rlaif.backends.prompt_tokens import PromptTokens, load_tokenizer

log = logging.getLogger(__name__)

METHODS = ("allowed_tokens", "echo", "chat")
#: Statuses worth retrying: rate limits and server-side failures.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class HTTPBackendError(RuntimeError):
    """A request the server refused, or kept failing after every retry."""


def _prompt_count(body: dict[str, Any]) -> int:
    """Prompts in a request: the backend sends one, but the API also takes a list of them."""
    prompt = body.get("prompt")
    return len(prompt) if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)) else 1


def answer_problem(body: dict[str, Any], answer: Any) -> str | None:
    """Why ``answer`` is not an answer to ``body``, or None: the one place answers are checked, so
    that no label is ever read from an answer to another question.

    ``n`` choices per prompt, indexed from 0; with ``allowed_token_ids``, the sampled token is one
    of them and is among the returned log-probs (vLLM always returns it), so log-probs keyed by
    other tokens are refused rather than read. Missing log-probs are left to the readers, which
    name the method to use instead.
    """
    if not isinstance(answer, dict):
        return f"the answer is a JSON {type(answer).__name__}, not an object: {str(answer)[:200]!r}"
    choices = answer.get("choices")
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        return f"the answer holds no list of choices: {str(answer)[:200]!r}"
    want = _prompt_count(body) * body.get("n", 1)
    indices = [choice.get("index") for choice in choices]
    if sorted(index for index in indices if isinstance(index, int)) != list(range(want)):
        return f"{len(choices)} choices with indices {indices[:8]} for a request that asks for {want} (0..{want - 1})"
    allowed, logprobs = body.get("allowed_token_ids"), (choices or [{}])[0].get("logprobs")
    if not allowed or not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        return None
    sampled, top = str(logprobs["tokens"][0]), logprobs.get("top_logprobs")
    top = top[0] if isinstance(top, list) and top else None
    if not sampled.startswith("token_id:"):
        return None  # tokens as text: the reader says which method to use
    if not sampled.removeprefix("token_id:").isdigit() or int(sampled.removeprefix("token_id:")) not in allowed:
        return (f"it sampled {sampled}, which the request did not allow ({sorted(allowed)[:8]}): log-probs for "
                "other tokens than asked (does the server ignore allowed_token_ids? vLLM does not)")
    if not isinstance(top, dict) or sampled not in top:
        return f"the sampled {sampled} is not among the top log-probs it returned ({list(top or {})[:5]})"
    if not all(isinstance(value, (int, float)) for value in top.values()):
        return f"top log-probs that are not numbers: {str(top)[:200]}"
    return None


def run_sync(coroutine):
    """Run a coroutine to completion from sync code, also inside Jupyter's running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class OpenAICompatibleBackend:
    """Scores labels and generates rationales through an OpenAI-compatible server.

    ``model`` is the name the server serves. ``tokenizer`` (a catalogue name, folder, hub
    name or tokenizer object; default: ``model``) gives the token ids the completion
    methods send; the ``chat`` method needs none.
    """

    #: The server batches requests in flight: the labeler sends this many pairs per call.
    pairs_per_step = 128

    def __init__(self, base_url: str, model: str, *, method: str = "allowed_tokens", tokenizer: Any = None,
                 api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 32, timeout: float = 120.0,
                 max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_prompt_tokens: int | None = None, top_logprobs: int = 20):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError(f"max_concurrency must be >= 1 and max_retries >= 0, got {max_concurrency}, {max_retries}")
        self.base_url, self.model, self.method = base_url.rstrip("/"), model, method
        self.source = f"{model} served at {self.base_url} (method {method})"
        self.api_key_env, self.max_concurrency, self.timeout = api_key_env, max_concurrency, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.top_logprobs = top_logprobs
        if tokenizer is None and method != "chat":
            tokenizer = model
        if isinstance(tokenizer, str):
            try:
                tokenizer = load_tokenizer(tokenizer)
            except (OSError, ValueError) as exc:
                raise ValueError(f"no tokenizer for {tokenizer!r} ({exc}); name the served model's tokenizer "
                                 "(tokenizer=, --tokenizer: a catalogue name, folder or hub name), or use method "
                                 "'chat', which needs none") from exc
        self.tokens = PromptTokens(tokenizer, model) if tokenizer is not None else None
        self._max_prompt_tokens = max_prompt_tokens
        #: Requests sent, and how many of them were retries.
        self.stats = {"requests": 0, "retries": 0}

    # ---------------------------------------------------------------- HTTP

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries: 429/5xx, transport errors (timeouts included) and a 200 that is not
        JSON back off exponentially (with jitter, honouring Retry-After); other errors, and an answer
        that does not fit the request, fail at once with the server's message."""
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            self.stats["retries"] += attempt > 0
            wait = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
            try:
                response = await client.post(path, json=body)
            except httpx.TimeoutException as exc:  # no answer, or a body that stalled half-sent
                problem = f"{type(exc).__name__}: no progress within the {self.timeout:g} s timeout" + (
                    f" ({exc})" if str(exc) else "")
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError as exc:  # a truncated body, a proxy's HTML page
                        problem = f"HTTP 200 but the body was not JSON ({exc}): {response.text[:200]!r}"
                    else:
                        mismatch = answer_problem(body, answer)
                        if mismatch is None:
                            return answer
                        raise HTTPBackendError(f"{self.base_url}{path}: the answer does not fit the request: "
                                               f"{mismatch}; not retried, and no label read from it")
                elif response.status_code in RETRY_STATUSES:
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    retry_after = response.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        wait = min(self.max_backoff, float(retry_after))
                else:
                    raise HTTPBackendError(f"{self.base_url}{path} answered HTTP {response.status_code}: "
                                           f"{response.text[:500]}")
            if attempt == self.max_retries:
                raise HTTPBackendError(f"{self.base_url}{path}: gave up after {attempt + 1} attempts; "
                                       f"last error: {problem}")
            log.warning("%s%s: %s; retry %d/%d in %.1f s", self.base_url, path, problem, attempt + 1,
                        self.max_retries, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _post_all(self, path: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), limits=limits,
                                     timeout=httpx.Timeout(self.timeout)) as client:
            gate = asyncio.Semaphore(self.max_concurrency)

            async def one(body):
                async with gate:
                    return await self._post(client, path, body)

            tasks = [asyncio.ensure_future(one(body)) for body in bodies]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:  # one request failed for good: stop the others before the client closes
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    def post_all(self, path: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers to ``bodies``, in order, at most ``max_concurrency`` in flight."""
        return run_sync(self._post_all(path, bodies)) if bodies else []

    # ---------------------------------------------------------------- tokens

    def _need_tokens(self, why: str = "counting tokens") -> PromptTokens:
        if self.tokens is None:
            raise ValueError(f"{self.model}: {why} needs a tokenizer; pass tokenizer=")
        return self.tokens

    @property
    def max_prompt_tokens(self) -> int | None:
        """The limit given, else the server's ``max_model_len`` (vLLM reports it), else None."""
        if self._max_prompt_tokens is None and self.tokens is not None:
            try:
                with httpx.Client(base_url=self.base_url, headers=self._headers(), timeout=self.timeout) as client:
                    cards = client.get("/v1/models").json().get("data", [])
                self._max_prompt_tokens = next((c.get("max_model_len") for c in cards
                                                if c.get("id") == self.model), None)
            except (httpx.HTTPError, ValueError, AttributeError):
                return None
        return self._max_prompt_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._need_tokens().count_tokens(texts)

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        """The labels' tokens after the prompt, by the served model's tokenizer (the token ids the
        completion methods send)."""
        return self._need_tokens("tokenizing labels").continuations(prompt, labels)

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        """With ``chat`` the server wraps the prompt in its template: the ending closes the user's message."""
        if self.method == "chat":
            return f"{message}\n{reply_prefix}"
        return self._need_tokens().chat_prompt(message, reply_prefix)

    # ---------------------------------------------------------------- scoring

    def _completion_body(self, prompt: list[int], **fields) -> dict[str, Any]:
        return {"model": self.model, "prompt": prompt, "temperature": 0.0, **fields}

    def _logprobs_of(self, answer: dict[str, Any], what: str) -> dict[str, Any]:
        choices = answer.get("choices") or [{}]
        logprobs = choices[0].get("logprobs")
        if not logprobs:
            raise MissingLogprobsError(
                f"{self.base_url}: the answer for {what} carries no log-probs (method {self.method!r}); the "
                "server or a proxy in front of it drops them. Use a server that returns log-probs, or another method")
        return logprobs

    def _ask(self, requests: Sequence[tuple[Context, Sequence[int]]]) -> list[dict[int, float]]:
        """``allowed_tokens``: one next-token read per (context, candidate ids), tokens as ids."""
        answers = self.post_all("/v1/completions", [
            self._completion_body(list(context), max_tokens=1, logprobs=self.top_logprobs,
                                  allowed_token_ids=list(allowed), return_tokens_as_token_ids=True)
            for context, allowed in requests])
        reads = []
        for i, answer in enumerate(answers):
            top = (self._logprobs_of(answer, f"request {i}").get("top_logprobs") or [{}])[0] or {}
            try:
                reads.append({int(token.removeprefix("token_id:")): float(lp) for token, lp in top.items()})
            except ValueError:
                raise MissingLogprobsError(
                    f"{self.base_url}: tokens came back as text ({list(top)[:3]}), not as token ids; method "
                    "'allowed_tokens' needs a vLLM server (return_tokens_as_token_ids); use method 'echo'") from None
        return reads

    def _echo(self, conts) -> np.ndarray:
        """``echo``: each candidate appended to its prompt; the sum of its tokens' echoed log-probs."""
        flat = [cont for row in conts for cont in row]
        answers = self.post_all("/v1/completions", [
            self._completion_body(list(c.prompt_ids + c.label_ids), max_tokens=1, logprobs=1, echo=True)
            for c in flat])
        scores = []
        for i, (cont, answer) in enumerate(zip(flat, answers)):
            values = self._logprobs_of(answer, f"prompt {i // len(conts[0])}").get("token_logprobs") or []
            start, stop = len(cont.prompt_ids), len(cont.prompt_ids) + len(cont.label_ids)
            if len(values) < stop or any(v is None for v in values[start:stop]):
                raise MissingLogprobsError(
                    f"{self.base_url}: the echo for prompt {i // len(conts[0])} holds {len(values)} token log-probs, "
                    f"fewer than its {stop} prompt tokens; the server does not echo prompt log-probs")
            scores.append(sum(values[start:stop]))
        return np.array(scores, dtype=np.float64).reshape(len(conts), -1)

    def _chat(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """``chat``: each label's log-prob, found by its text among the first answer token's top log-probs."""
        answers = self.post_all("/v1/chat/completions", [
            {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
             "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs} for prompt in prompts])
        result = np.empty((len(prompts), len(labels)))
        for i, answer in enumerate(answers):
            content = self._logprobs_of(answer, f"prompt {i}").get("content") or [{}]
            top = {entry["token"]: entry["logprob"] for entry in content[0].get("top_logprobs") or []}
            for j, label in enumerate(labels):
                if label not in top:
                    raise MissingLogprobsError(
                        f"{self.base_url}: label {label!r} is not among the top {self.top_logprobs} first tokens "
                        f"the model answers prompt {i} with ({sorted(top, key=top.get)[-5:]} lead); method 'chat' "
                        "can read only those. Use method 'allowed_tokens' or 'echo' with a completions server")
                result[i, j] = top[label]
        return result

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) over the full vocabulary, [len(prompts), len(labels)]."""
        if not prompts:
            return np.empty((0, len(labels)))
        if self.method == "chat":
            return self._chat(prompts, labels)
        conts = [self.continuations(prompt, labels) for prompt in prompts]
        if self.method == "echo":
            return self._echo(conts)
        return label_logprobs_by_next_token(conts, self._ask)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """``n`` continuations per prompt (greedy at temperature 0), each cut at the first stop string."""
        settings = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "n": n,
                    "top_p": 1.0, "seed": seed, **({"stop": list(stop)} if stop else {})}
        if self.method == "chat":
            answers = self.post_all("/v1/chat/completions", [
                {**settings, "messages": [{"role": "user", "content": prompt}]} for prompt in prompts])
            texts = [[c["message"]["content"] or "" for c in sorted(a["choices"], key=lambda c: c["index"])]
                     for a in answers]
        else:
            answers = self.post_all("/v1/completions", [{**settings, "prompt": ids}
                                                         for ids in self.tokens.encode(prompts)])
            texts = [[c["text"] for c in sorted(a["choices"], key=lambda c: c["index"])] for a in answers]
        return [[cut_at_stop(text, stop) for text in row] for row in texts]

    def fingerprint(self) -> dict[str, Any]:
        """The served model and the method; not the URL (shards on several servers are one run) and
        never the API key."""
        return {"backend": "openai-http", "model": self.model, "method": self.method}
