"""Reward callables from a config entry, so that experiments and trainers hold no reward-specific code.

An entry is ``{reward_model: PATH}`` (a reward model saved by rlaif: RM_AI, RM_HF),
``{direct: {model, task, preamble, chat_template}}`` (the labeler's 1-10 score, d-RLAIF) or
``{remote: URL}`` (the same score from an ``rlaif serve`` server, ``RemoteReward``).
Every callable follows TRL's convention ``reward(prompts, completions, **kwargs) -> list[float]``
and carries the entry's name as ``__name__`` (TRL logs the reward under it).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from rlaif.backends.http_backend import RETRY_STATUSES, HTTPBackendError
from rlaif.backends.transformers_backend import TransformersBackend
from rlaif.direct_scores import DirectScorer, as_text
from rlaif.templates import PromptTemplate
from rlaif.training.reward_model import load_reward_models

log = logging.getLogger(__name__)


class RemoteReward:
    """A TRL reward function answered by a reward server over OpenRLHF's ``/get_reward`` protocol
    (``rlaif serve``: the direct 1-10 score as a reward in [-1, 1]).

    ``url`` is the server (``http://host:8000``) or its ``/get_reward`` endpoint. Prompts and
    completions are strings or chat messages, joined as ``direct_scores.as_text`` joins them, so
    the rewards are the in-process ``DirectScorer``'s for the server's model and template; a
    response the model cannot fit comes back as NaN, as in process. Each call is one request with
    a ``timeout`` in seconds, retried up to ``max_retries`` times with exponential backoff and
    jitter on 429 (honouring ``Retry-After``), 5xx, timeouts and dropped connections; any other
    error stops at once with the server's message, since retrying a refused request cannot help.

    >>> reward = RemoteReward("http://127.0.0.1:8000")  # doctest: +SKIP
    >>> reward(["Say hi"], [" Hello!"])                  # doctest: +SKIP
    [0.31...]
    """

    def __init__(self, url: str, *, timeout: float = 300.0, max_retries: int = 6, backoff: float = 0.5,
                 max_backoff: float = 30.0, name: str = "remote_reward"):
        if max_retries < 0 or timeout <= 0:
            raise ValueError(f"max_retries must be >= 0 and timeout > 0, got {max_retries}, {timeout}")
        self.url = url.rstrip("/")
        if not self.url.endswith("/get_reward"):
            self.url += "/get_reward"
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.__name__ = name
        #: Requests sent, and how many of them were retries.
        self.stats = {"requests": 0, "retries": 0}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        texts = [as_text(prompt) for prompt in prompts]
        queries = [text + as_text(completion) for text, completion in zip(texts, completions)]
        rewards = self.post({"query": queries, "prompts": texts}).get("rewards")
        if not isinstance(rewards, list) or len(rewards) != len(queries):
            raise HTTPBackendError(f"{self.url} answered {rewards!r:.200} for {len(queries)} queries; expected a list "
                                   "of that many rewards")
        return [float("nan") if reward is None else float(reward) for reward in rewards]

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The server's JSON answer to ``body``, after retries where retrying can help."""
        with httpx.Client(timeout=httpx.Timeout(self.timeout)) as client:
            for attempt in range(self.max_retries + 1):
                self.stats["requests"] += 1
                self.stats["retries"] += attempt > 0
                wait = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                try:
                    response = client.post(self.url, json=body)
                except httpx.TransportError as exc:  # refused, reset, dropped mid-answer, timed out
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        try:
                            return response.json()
                        except ValueError:
                            raise HTTPBackendError(f"{self.url} answered 200 with no JSON: {response.text[:200]}") \
                                from None
                    if response.status_code not in RETRY_STATUSES:
                        raise HTTPBackendError(f"{self.url} answered HTTP {response.status_code}: "
                                               f"{response.text[:500]}")
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    retry_after = response.headers.get("retry-after", "")
                    if retry_after.replace(".", "", 1).isdigit():
                        wait = min(self.max_backoff, float(retry_after))
                if attempt == self.max_retries:
                    raise HTTPBackendError(f"{self.url}: gave up after {attempt + 1} attempts; last error: {problem}")
                log.warning("%s: %s; retry %d/%d in %.1f s", self.url, problem, attempt + 1, self.max_retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")


def reward_from_spec(name: str, spec: Mapping[str, Any], backends: dict[str, TransformersBackend] | None = None):
    """The reward named ``name`` from its entry. ``backends`` (model name -> backend) shares a
    loaded labeler between direct rewards; new ones are added to it."""
    if set(spec) == {"reward_model"}:
        reward = load_reward_models({name: spec["reward_model"]})[name]
    elif set(spec) == {"remote"}:
        reward = RemoteReward(spec["remote"])
    elif set(spec) == {"direct"}:
        direct = dict(spec["direct"])
        unknown = set(direct) - {"model", "task", "preamble", "chat_template"}
        if unknown or "model" not in direct or "task" not in direct:
            raise ValueError(f"reward {name}: direct takes model, task, preamble, chat_template; got {sorted(direct)}")
        backends = {} if backends is None else backends
        if direct["model"] not in backends:
            backends[direct["model"]] = TransformersBackend.from_pretrained(direct["model"])
        reward = DirectScorer(backends[direct["model"]], PromptTemplate(direct["task"], direct.get("preamble", "base")),
                              chat_template=direct.get("chat_template", True))
    else:
        raise ValueError(f"reward {name}: give one of reward_model: PATH, direct: {{model, task}} or remote: URL, "
                         f"got {dict(spec)}")
    reward.__name__ = name
    return reward
