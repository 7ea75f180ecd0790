"""What a labeling run will cost, before it runs.

The run's own code builds its prompts: the labeler (or direct scorer, or PriDe) runs as it
would, but on a ``RecordingBackend``, which answers tokenizer questions from the real engine,
records every prompt it is asked to score or to generate from, and returns uniform label
log-probs. So the counts (prompts, tokens, pairs cut to fit or skipped) are those of the real
run, not of a second implementation. Chain-of-thought rationales are stood in by placeholders
of the full ``cot_max_tokens``: the token counts and the time are upper bounds there.

The wall time is measured, not modeled: one step of the real engine runs on the first
step's prompts (after an untimed call that pays for first-use costs), and the rest is scaled
by prompt tokens, with shared prefixes counted once per step as the engines run them.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from rlaif.backends.base import LabelBackend, WrappedBackend

#: The placeholder rationale's unit: one token in the tokenizers rlaif ships with (a space and a letter).
PLACEHOLDER_TOKEN = " x"
#: Most label prompts in the timed warm-up (a run of one step is not run whole).
WARMUP_PROMPTS = 16
#: New tokens the warm-up generates to time chain-of-thought (scaled to cot_max_tokens).
WARMUP_NEW_TOKENS = 8


class RecordingBackend(WrappedBackend):
    """A stand-in engine for a dry run: records the prompts, scores nothing (see the module docstring)."""

    def __init__(self, backend: LabelBackend):
        super().__init__(backend)
        self.label_steps: list[tuple[list[str], tuple[str, ...]]] = []  # one entry per label_logprobs call
        self.generate_steps: list[tuple[list[str], dict[str, Any]]] = []  # one entry per generate call

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        self.label_steps.append((list(prompts), tuple(labels)))
        return np.full((len(prompts), len(labels)), -math.log(len(labels)))

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int | None = None, stop: Sequence[str] | None = None) -> list[list[str]]:
        self.generate_steps.append((list(prompts), {"max_new_tokens": max_new_tokens, "temperature": temperature,
                                                    "n": n, "seed": seed, "stop": stop}))
        return [[PLACEHOLDER_TOKEN * max_new_tokens] * n for _ in prompts]


@dataclass
class CostEstimate:
    pairs: int
    pairs_truncated: int            #: contexts cut from the left to fit the model
    pairs_skipped: int              #: pairs whose responses alone do not fit: never sent
    steps: int                      #: backend calls that score labels
    label_prompts: int
    prompt_tokens: int              #: every label prompt's tokens
    prompt_tokens_shared_once: int  #: the same, a prefix shared by prompts of one step counted once
    rationale_prompts: int          #: chain-of-thought generations (x samples), 0 without CoT
    rationale_tokens_max: int       #: tokens those generate at most
    weights_bytes: int | None       #: the model's parameters in memory (None: the engine holds them elsewhere)
    peak_rss_bytes: int             #: this process's peak resident memory after the warm-up
    warmup_seconds: float           #: the timed warm-up step
    estimated_seconds: float        #: the whole run, scaled from the warm-up
    first_prompt: str | None        #: the first label prompt, exactly as the model will see it
    load_seconds: float = 0.0       #: loading the model, as this process just did (a real run pays it again)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokens_shared_once(prompts: Sequence[str], count_tokens: Callable[[Sequence[str]], list[int]]) -> int:
    """Tokens in ``prompts`` when a prefix shared between prompts is counted once: each prompt, in
    sorted order, adds only what follows its longest common prefix with the prompt before it. The
    prefix is found in characters and counted in tokens, so a token split at its end may count twice."""
    ordered = sorted(prompts)
    shared = [os.path.commonprefix([a, b]) for a, b in zip(ordered, ordered[1:])]
    return sum(count_tokens(ordered)) - sum(count_tokens(shared) if shared else [])


def weights_bytes(backend: LabelBackend) -> int | None:
    """Bytes of an in-process transformers model's parameters; None for engines that hold their own."""
    from rlaif.backends.transformers_backend import TransformersBackend

    engine = backend.backend if isinstance(backend, RecordingBackend) else backend
    if not isinstance(engine, TransformersBackend):
        return None
    return sum(p.numel() * p.element_size() for p in engine.model.parameters())


def estimate_cost(backend: LabelBackend, run: Callable[[LabelBackend], pd.DataFrame]) -> CostEstimate:
    """Run ``run`` (the labeling call, given a backend) on a recording stand-in, then time one real step.

    ``run`` must not write output (call the labeler with ``out=None``)."""
    recorder = RecordingBackend(backend)
    labels = run(recorder)
    flags = labels["flags"] if "flags" in labels else pd.Series([[]] * len(labels))
    per_step = [(tokens_shared_once(prompts, backend.count_tokens), prompts, candidates)
                for prompts, candidates in recorder.label_steps]
    all_prompts = [p for prompts, _ in recorder.label_steps for p in prompts]
    prompt_tokens = sum(backend.count_tokens(all_prompts)) if all_prompts else 0
    shared_once = sum(tokens for tokens, _, _ in per_step)
    generated = [(prompts, options) for prompts, options in recorder.generate_steps]
    rationale_prompts = sum(len(prompts) * options["n"] for prompts, options in generated)
    rationale_tokens = sum(len(prompts) * options["n"] * options["max_new_tokens"] for prompts, options in generated)

    warmup = 0.0
    estimated = 0.0
    if per_step:
        _, first_prompts, candidates = per_step[0]
        sample = first_prompts[:WARMUP_PROMPTS]
        backend.label_logprobs(per_step[-1][1][-1:], candidates)  # first-use costs, untimed (another pair)
        started = time.perf_counter()
        backend.label_logprobs(sample, candidates)
        warmup = time.perf_counter() - started
        estimated = warmup * shared_once / max(tokens_shared_once(sample, backend.count_tokens), 1)
    if generated:
        prompts, options = generated[0]
        prompts = prompts[:WARMUP_PROMPTS]
        new_tokens = min(WARMUP_NEW_TOKENS, options["max_new_tokens"])
        started = time.perf_counter()
        backend.generate(prompts, max_new_tokens=new_tokens, temperature=options["temperature"], n=options["n"],
                         seed=options["seed"], stop=options["stop"])
        seconds = time.perf_counter() - started
        warmup += seconds
        sampled = len(prompts) * options["n"]
        estimated += seconds * options["max_new_tokens"] / new_tokens * rationale_prompts / sampled
    return CostEstimate(
        pairs=len(labels), pairs_truncated=int(sum("context_truncated" in (f or []) for f in flags)),
        pairs_skipped=int(sum("skipped" in (f or []) for f in flags)), steps=len(recorder.label_steps),
        label_prompts=len(all_prompts), prompt_tokens=prompt_tokens, prompt_tokens_shared_once=shared_once,
        rationale_prompts=rationale_prompts, rationale_tokens_max=rationale_tokens,
        weights_bytes=weights_bytes(backend), peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        warmup_seconds=warmup, estimated_seconds=estimated, first_prompt=all_prompts[0] if all_prompts else None)


def format_cost(cost: CostEstimate) -> str:
    """The estimate as the lines ``rlaif label --dry-run`` prints."""
    def size(n: int | None) -> str:
        return "held by the engine, not this process" if n is None else f"{n / 2**20:,.0f} MiB"

    lines = [f"first label prompt, as the model sees it:\n{cost.first_prompt}\n"] if cost.first_prompt else []
    lines += [
        f"pairs                    {cost.pairs} ({cost.pairs_truncated} with the context cut to fit, "
        f"{cost.pairs_skipped} skipped: their responses alone do not fit)",
        f"label prompts            {cost.label_prompts} in {cost.steps} step{'s' if cost.steps != 1 else ''}",
        f"prompt tokens            {cost.prompt_tokens:,} ({cost.prompt_tokens_shared_once:,} with prefixes shared "
        f"within a step counted once)",
    ]
    if cost.rationale_prompts:
        lines.append(f"rationales (CoT)         {cost.rationale_prompts} generations, at most "
                     f"{cost.rationale_tokens_max:,} new tokens (upper bounds: placeholders of full length)")
    minutes = cost.estimated_seconds / 60
    lines += [
        f"model weights            {size(cost.weights_bytes)}",
        f"peak memory (process)    {size(cost.peak_rss_bytes)} after the warm-up",
        f"estimated labeling time  {cost.estimated_seconds:,.0f} s ({minutes:,.1f} min), scaled from a "
        f"{cost.warmup_seconds:.1f} s warm-up on this machine; the score cache and --resume can only shorten it",
    ]
    if cost.load_seconds:
        total = cost.load_seconds + cost.estimated_seconds
        lines.append(f"estimated wall time      {total:,.0f} s ({total / 60:,.1f} min), with "
                     f"{cost.load_seconds:,.0f} s to load the model (as measured just now)")
    return "\n".join(lines)
