"""Label pairs in both orders and turn the label log-probs into swap-averaged soft labels.

Prompts longer than the model's context: the context (conversation, post,
instruction) is cut from the left, keeping its most recent part and both
responses whole, and the row is flagged ``context_truncated``. A pair whose
responses alone do not fit is not sent to the model: its row carries
``skipped_reason`` and no probabilities, and the report counts it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlaif.backends.base import LabelBackend
from rlaif.label_store import LabelStore
from rlaif.pairs import PreferencePair
from rlaif.soft_labels import candidate_mass, swap_average
from rlaif.templates import PromptTemplate

TRUNCATION_MARK = "[...] "
#: Rows whose mean candidate mass is below this are flagged: the model is not answering with a label.
LOW_MASS = 0.01


def build_prompts(pair: PreferencePair, template: PromptTemplate, backend: LabelBackend,
                  chat_template: bool, context: str | None = None) -> tuple[str, str]:
    """The pair's prompt in the first order (response 1 shown first) and in the swapped order."""
    context = pair.context if context is None else context
    texts = []
    for first, second in ((pair.response_1, pair.response_2), (pair.response_2, pair.response_1)):
        prompt = template.render(context, first, second)
        texts.append(backend.chat_prompt(prompt.message, prompt.ending) if chat_template else prompt.text)
    return texts[0], texts[1]


def fit_prompts(pair: PreferencePair, template: PromptTemplate, backend: LabelBackend, chat_template: bool,
                max_tokens: int | None) -> tuple[tuple[str, str] | None, bool, str | None]:
    """(prompts, context_truncated, skipped_reason) under the context-length policy above."""
    prompts = build_prompts(pair, template, backend, chat_template)
    if max_tokens is None or max(backend.count_tokens(prompts)) <= max_tokens:
        return prompts, False, None

    def fits(keep: int) -> tuple[str, str] | None:
        context = TRUNCATION_MARK + pair.context[len(pair.context) - keep:] if keep else TRUNCATION_MARK
        candidate = build_prompts(pair, template, backend, chat_template, context)
        return candidate if max(backend.count_tokens(candidate)) <= max_tokens else None

    if fits(0) is None:
        longest = max(backend.count_tokens(build_prompts(pair, template, backend, chat_template, TRUNCATION_MARK)))
        return None, False, f"the responses alone make a {longest}-token prompt; the model takes {max_tokens}"
    low, high = 0, len(pair.context)  # most characters of context (from the end) that still fit
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) is not None else (low, mid - 1)
    return fits(low), True, None


def run_id(backend: LabelBackend, template: PromptTemplate, chat_template: bool) -> str:
    """Hash of everything that changes a label: engine settings, template files, labels, chat wrapping."""
    settings = {"backend": backend.fingerprint(), "template": template.name,
                "template_hash": template.fingerprint, "labels": template.labels, "chat_template": chat_template}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _row(pair: PreferencePair, run_info: dict[str, Any], **values) -> dict[str, Any]:
    return {"id": pair.id, "task": pair.task, **values, "human_choice": pair.human_choice, **run_info,
            "metadata": pair.metadata}


def _scored_rows(pairs: Sequence[PreferencePair], truncated: Sequence[bool], logprobs_first, logprobs_swapped,
                 template: PromptTemplate, run_info: dict[str, Any]) -> list[dict[str, Any]]:
    soft = swap_average(logprobs_first, logprobs_swapped, template.asks_more_harmful)
    mass_first, mass_swapped = candidate_mass(logprobs_first), candidate_mass(logprobs_swapped)
    rows = []
    for i, pair in enumerate(pairs):
        finite = bool(np.all(np.isfinite(logprobs_first[i])) and np.all(np.isfinite(logprobs_swapped[i])))
        mass = float((mass_first[i] + mass_swapped[i]) / 2)
        flags = [name for name, on in (("nonfinite_logprobs", not finite), ("low_candidate_mass", finite and mass < LOW_MASS),
                                       ("context_truncated", truncated[i])) if on]
        number = (lambda x: float(x)) if finite else (lambda x: None)
        rows.append(_row(
            pair, run_info,
            p_first_order=number(soft["p_first_order"][i]),
            p_swapped_order=number(soft["p_swapped_order"][i]),
            p=number(soft["p"][i]),
            ai_choice=int(soft["ai_choice"][i]) if finite else None,
            position_first_order=int(soft["position_first_order"][i]) if finite else None,
            position_swapped_order=int(soft["position_swapped_order"][i]) if finite else None,
            # JSON has no NaN/inf: a non-finite log-prob is written as null and flagged
            logprobs_first_order=[float(x) if np.isfinite(x) else None for x in logprobs_first[i]],
            logprobs_swapped_order=[float(x) if np.isfinite(x) else None for x in logprobs_swapped[i]],
            mass_first_order=number(mass_first[i]),
            mass_swapped_order=number(mass_swapped[i]),
            candidate_mass=number(mass),
            flags=flags,
            skipped_reason=None,
        ))
    return rows


def _skipped_row(pair: PreferencePair, reason: str, run_info: dict[str, Any]) -> dict[str, Any]:
    empty = dict.fromkeys(("p_first_order", "p_swapped_order", "p", "ai_choice", "position_first_order",
                           "position_swapped_order", "logprobs_first_order", "logprobs_swapped_order",
                           "mass_first_order", "mass_swapped_order", "candidate_mass"))
    return _row(pair, run_info, **empty, flags=["skipped"], skipped_reason=reason)


def label_pairs(pairs: Sequence[PreferencePair], backend: LabelBackend, template: PromptTemplate, *,
                chat_template: bool = False, out: str | Path | None = None, fresh: bool = False,
                pairs_per_step: int = 8, max_prompt_tokens: int | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Label every pair in both orders; one row per pair, in input order.

    With ``out``, each step's rows are appended to disk as they finish and a rerun
    with the same settings skips the pairs already labeled (``fresh`` starts over).
    Steps are fixed slices of ``pairs``, so a resumed run scores the same batches as
    an uninterrupted one. ``max_prompt_tokens`` defaults to the backend's limit.
    """
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pair ids must be unique; {duplicate!r} appears more than once")
    if max_prompt_tokens is None:
        max_prompt_tokens = getattr(backend, "max_prompt_tokens", None)
    this_run = run_id(backend, template, chat_template)
    run_info = {"model": backend.fingerprint()["model"], "template": template.name,
                "template_hash": template.fingerprint, "labels": list(template.labels),
                "chat_template": chat_template, "run_id": this_run}
    store = LabelStore(out, this_run, fresh=fresh) if out is not None else None
    done = dict(store.done) if store else {}
    with tqdm(total=len(pairs), initial=sum(pair_id in done for pair_id in ids), desc="labeling pairs",
              unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), pairs_per_step):
            step = [pair for pair in pairs[start:start + pairs_per_step] if pair.id not in done]
            if not step:
                continue
            rows, scored, truncated, prompts = [], [], [], []
            for pair in step:
                fitted, was_truncated, reason = fit_prompts(pair, template, backend, chat_template, max_prompt_tokens)
                if reason:
                    rows.append(_skipped_row(pair, reason, run_info))
                else:
                    scored.append(pair)
                    truncated.append(was_truncated)
                    prompts.extend(fitted)
            if scored:
                logprobs = backend.label_logprobs(prompts, template.labels)
                rows += _scored_rows(scored, truncated, logprobs[0::2], logprobs[1::2], template, run_info)
            if store:
                store.append(rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(step))
    ordered = [done[pair_id] for pair_id in ids]
    if store:
        store.finish(ordered)
    return pd.DataFrame(ordered)
