"""Label pairs in both orders and turn the label log-probs into swap-averaged soft labels."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from rlaif.backends.base import LabelBackend
from rlaif.label_store import LabelStore
from rlaif.pairs import PreferencePair
from rlaif.soft_labels import candidate_mass, swap_average
from rlaif.templates import PromptTemplate


def build_prompts(pair: PreferencePair, template: PromptTemplate, backend: LabelBackend,
                  chat_template: bool) -> tuple[str, str]:
    """The pair's prompt in the first order (response 1 shown first) and in the swapped order."""
    texts = []
    for first, second in ((pair.response_1, pair.response_2), (pair.response_2, pair.response_1)):
        prompt = template.render(pair.context, first, second)
        texts.append(backend.chat_prompt(prompt.message, prompt.ending) if chat_template else prompt.text)
    return texts[0], texts[1]


def run_id(backend: LabelBackend, template: PromptTemplate, chat_template: bool) -> str:
    """Hash of everything that changes a label: engine settings, template files, labels, chat wrapping."""
    settings = {"backend": backend.fingerprint(), "template": template.name,
                "template_hash": template.fingerprint, "labels": template.labels, "chat_template": chat_template}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rows(pairs: Sequence[PreferencePair], logprobs_first, logprobs_swapped, template: PromptTemplate,
          run_info: dict[str, Any]) -> list[dict[str, Any]]:
    soft = swap_average(logprobs_first, logprobs_swapped, template.asks_more_harmful)
    mass_first, mass_swapped = candidate_mass(logprobs_first), candidate_mass(logprobs_swapped)
    rows = []
    for i, pair in enumerate(pairs):
        rows.append({
            "id": pair.id,
            "task": pair.task,
            "p_first_order": float(soft["p_first_order"][i]),
            "p_swapped_order": float(soft["p_swapped_order"][i]),
            "p": float(soft["p"][i]),
            "ai_choice": int(soft["ai_choice"][i]),
            "human_choice": pair.human_choice,
            "position_first_order": int(soft["position_first_order"][i]),
            "position_swapped_order": int(soft["position_swapped_order"][i]),
            "logprobs_first_order": [float(x) for x in logprobs_first[i]],
            "logprobs_swapped_order": [float(x) for x in logprobs_swapped[i]],
            "mass_first_order": float(mass_first[i]),
            "mass_swapped_order": float(mass_swapped[i]),
            "candidate_mass": float((mass_first[i] + mass_swapped[i]) / 2),
            **run_info,
            "metadata": pair.metadata,
        })
    return rows


def label_pairs(pairs: Sequence[PreferencePair], backend: LabelBackend, template: PromptTemplate, *,
                chat_template: bool = False, out: str | Path | None = None, fresh: bool = False,
                pairs_per_step: int = 8, progress: bool = True) -> pd.DataFrame:
    """Label every pair in both orders; one row per pair, in input order.

    With ``out``, each step's rows are appended to disk as they finish and a rerun
    with the same settings skips the pairs already labeled (``fresh`` starts over).
    """
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pair ids must be unique; {duplicate!r} appears more than once")
    this_run = run_id(backend, template, chat_template)
    run_info = {"model": backend.fingerprint()["model"], "template": template.name,
                "template_hash": template.fingerprint, "labels": list(template.labels),
                "chat_template": chat_template, "run_id": this_run}
    store = LabelStore(out, this_run, fresh=fresh) if out is not None else None
    done = dict(store.done) if store else {}
    todo = [pair for pair in pairs if pair.id not in done]
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="labeling pairs", unit="pair",
              disable=not progress) as bar:
        for start in range(0, len(todo), pairs_per_step):
            step = todo[start:start + pairs_per_step]
            prompts = [text for pair in step for text in build_prompts(pair, template, backend, chat_template)]
            logprobs = backend.label_logprobs(prompts, template.labels)
            rows = _rows(step, logprobs[0::2], logprobs[1::2], template, run_info)
            if store:
                store.append(rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(step))
    ordered = [done[pair_id] for pair_id in ids]
    if store:
        store.finish(ordered)
    return pd.DataFrame(ordered)
