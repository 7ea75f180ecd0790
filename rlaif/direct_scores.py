"""Direct RLAIF (Lee et al. 2023, 2.2.2): the labeler scores ONE response 1-10; the expected score is the reward.

Reading the score. The ten labels "1".."10" are scored exactly as continuations
(multi-token: "10" is "1" then "0" in most tokenizers). "1" means "1 and stop":
where the tokenizer writes "10".."19" as "1" followed by more tokens, those
continuations are not a 1, so P(score 1) = P("1") - sum P("10".."19")
= P("1") (1 - P(digit | "1")). Where "10".."19" are tokens of their own (GPT-2
style), the token "1" already excludes them and P(score 1) = P("1"). Numbers
outside 1-10 ("15") are not candidates; the ten are renormalized. s = sum_k k P(k),
and the reward is s mapped linearly from [1, 10] to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlaif.backends.base import LabelBackend
from rlaif.label_store import run_in_steps
from rlaif.labels_table import pointwise_row, settings_hash
from rlaif.pairs import PreferencePair
from rlaif.prompting import cut_context
from rlaif.shards import take_shard
from rlaif.templates import PromptTemplate

SCORE_LABELS = tuple(str(k) for k in range(1, 11))
#: Scored beside the ten, to take "1 continued by a digit" out of P(score 1).
TEENS = tuple(str(k) for k in range(11, 20))


def score_distribution(logprobs: np.ndarray, one_is_a_prefix: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(P(score = k) for k = 1..10 renormalized, mass on the ten), from log-probs of SCORE_LABELS
    ([n, 10]) or of SCORE_LABELS + TEENS ([n, 19]). ``one_is_a_prefix``: the tokens of "10".."19"
    begin with the tokens of "1" (see the module docstring)."""
    probs = np.exp(np.asarray(logprobs, dtype=np.float64))
    ten = probs[:, :10].copy()
    if one_is_a_prefix:
        ten[:, 0] = np.clip(ten[:, 0] - probs[:, 9:].sum(axis=1), 0.0, None)  # "1" continued is not a 1
    probs = ten
    mass = probs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return probs / mass[:, None], mass


def expected_score(distribution: np.ndarray) -> np.ndarray:
    return distribution @ np.arange(1, 11, dtype=np.float64)


def score_to_reward(score: np.ndarray | float) -> np.ndarray | float:
    """1 -> -1, 5.5 -> 0, 10 -> 1."""
    return (np.asarray(score, dtype=np.float64) - 5.5) / 4.5


def as_text(item: Any) -> str:
    """A prompt or completion as text: a string, or a conversation (list of {role, content} messages)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(m, dict) and "content" in m for m in item):
        if len(item) == 1:
            return str(item[0]["content"])
        return "\n\n".join(f"{'Human' if m.get('role') == 'user' else 'Assistant'}: {m['content']}" for m in item)
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


class DirectScorer:
    """Scores single responses with a task's score templates; callable as a TRL reward function.

    ``scorer(prompts, completions, **kwargs) -> list[float]`` follows TRL's reward-function
    convention (prompts and completions as strings or chat messages) and returns rewards
    in [-1, 1]. Wrap the backend in ``CachedBackend`` to cache scores across calls.
    """

    def __init__(self, backend: LabelBackend, template: PromptTemplate, *, chat_template: bool = False):
        self.backend, self.template, self.chat_template = backend, template, chat_template
        self.__name__ = f"direct_rlaif_{template.task}"
        template.render_score("", "")  # fail now, not mid-run, if the score templates are missing

    def prompt(self, context: str, response: str) -> str:
        prompt = self.template.render_score(context, response)
        return self.backend.chat_prompt(prompt.message, prompt.ending) if self.chat_template else prompt.text

    def score(self, contexts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """Expected 1-10 score, reward, the ten-way distribution and the mass on the ten labels, per response."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        if not contexts:
            return {"score": np.empty(0), "reward": np.empty(0), "distribution": np.empty((0, 10)), "mass": np.empty(0)}
        prompts = [self._fit(c, r) for c, r in zip(contexts, responses)]
        fits = [i for i, p in enumerate(prompts) if p is not None]
        logprobs = np.full((len(prompts), len(SCORE_LABELS + TEENS)), np.nan)
        if fits:
            logprobs[fits] = self.backend.label_logprobs([prompts[i] for i in fits], SCORE_LABELS + TEENS)
        distribution, mass = score_distribution(logprobs, self._one_is_a_prefix(prompts[fits[0]]) if fits else True)
        score = expected_score(distribution)
        return {"score": score, "reward": score_to_reward(score), "distribution": distribution, "mass": mass}

    def _fit(self, context: str, response: str) -> str | None:
        """The prompt, its context cut from the left to fit the model (as pairwise prompts are);
        None when the response alone does not fit (its score is NaN)."""
        limit = self.backend.max_prompt_tokens
        prompt = self.prompt(context, response)
        if limit is None:
            return prompt
        budget = limit - 2  # room for the label tokens

        def fits(text: str) -> bool:
            return self.backend.count_tokens([text])[0] <= budget

        if fits(prompt):
            return prompt
        cut = cut_context(context, lambda kept: fits(self.prompt(kept, response)))
        return None if cut is None else self.prompt(cut, response)

    def _one_is_a_prefix(self, prompt: str) -> bool:
        """Do "10".."19" continue the tokens of "1" after this prompt? (They do where digits are
        split, as in SmolLM2, Qwen2.5 and Gemma; GPT-2 style tokenizers have "10" of its own.)"""
        one, ten = self.backend.continuations(prompt, ["1", "10"])
        return ten.prompt_ids == one.prompt_ids and ten.label_ids[:len(one.label_ids)] == one.label_ids

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        scored = self.score([as_text(p) for p in prompts], [as_text(c) for c in completions])
        return [float(r) for r in scored["reward"]]

    def fingerprint(self) -> dict[str, Any]:
        return {**self.backend.fingerprint(), "direct_scoring": self.template.task,
                "template_hash": self.template.fingerprint,
                "chat_template": self.chat_template}


def score_pairs(pairs: Sequence[PreferencePair], scorer: DirectScorer, *, out: str | Path | None = None,
                fresh: bool = False, pairs_per_step: int | None = None, progress: bool = True,
                shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Direct scoring as a pairwise labeler: each response scored alone, P(1 preferred) = sigmoid(s1 - s2).

    Rows have the same fields as ``label_pairs`` (so the same report applies) plus
    ``score_1``, ``score_2``. Both "orders" hold the same p: a pointwise score cannot
    prefer a position, so the report shows no position bias.
    """
    fingerprint = scorer.fingerprint()
    this_run = settings_hash(fingerprint)
    run_info = {"model": fingerprint["model"], "template": f"{scorer.template.task}/direct-score",
                "template_hash": scorer.template.fingerprint, "labels": list(SCORE_LABELS),
                "chat_template": scorer.chat_template, "run_id": this_run}

    def step(chunk: list[PreferencePair]) -> list[dict[str, Any]]:
        scored = scorer.score([p.context for p in chunk for _ in (1, 2)],
                              [r for p in chunk for r in (p.response_1, p.response_2)])
        return [pointwise_row(pair, run_info, scored["score"][2 * i], scored["score"][2 * i + 1],
                              names=("score_1", "score_2"),
                              mass=float((scored["mass"][2 * i] + scored["mass"][2 * i + 1]) / 2))
                for i, pair in enumerate(chunk)]

    pairs = take_shard(pairs, shard, run_info)
    return run_in_steps(pairs, this_run, out, fresh, pairs_per_step or scorer.backend.pairs_per_step, progress, step)
