"""Label pairs in both orders and turn the label log-probs into swap-averaged soft labels.

Each step fits every pair's context to the model (``rlaif.prompting.fit_context``),
generates rationales when chain-of-thought is on, scores every label prompt of the
step in one backend call, and combines the prompts of each order into one row of the
labels table (``rlaif.labels_table``). Steps are appended to the store as they finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlaif.backends.base import LabelBackend
from rlaif.label_store import run_in_steps
from rlaif.labels_table import pairwise_rows, settings_hash, skipped_row
from rlaif.pairs import PreferencePair
from rlaif.prompting import PairPrompts, Prompting, fit_context
from rlaif.shards import take_shard
from rlaif.soft_labels import candidate_mass, candidate_probs
from rlaif.templates import PromptTemplate


def run_id(backend: LabelBackend, template: PromptTemplate, chat_template: bool,
           prompting: Prompting | None = None, max_prompt_tokens: int | None = None, both_orders: bool = True) -> str:
    """Hash of everything that changes a label: engine settings, template files, labels, chat wrapping,
    techniques, the prompt-length limit, one order or both."""
    settings = {"backend": backend.fingerprint(), "template": template.name,
                "template_hash": template.fingerprint, "labels": template.labels, "chat_template": chat_template}
    if not both_orders:
        settings["orders"] = 1
    if max_prompt_tokens is not None:
        settings["max_prompt_tokens"] = max_prompt_tokens
    if prompting is not None and prompting != Prompting(preambles=(template.preamble,)):
        settings["prompting"] = prompting.describe()  # left out for the plain labeler: its run ids stay stable
    return settings_hash(settings)


def _combine(logprobs: np.ndarray, clamp: tuple[float, float] | None) -> np.ndarray:
    """Several prompts for one order (preambles, sampled rationales) -> one row of label log-probs.

    Each prompt's label distribution (softmax over the candidates) is clamped, if
    asked, and the distributions are averaged with equal weight, as Lee et al. and
    Constitutional AI average them; the candidate mass is averaged separately. The
    result is returned as log(mean distribution x mean mass), so the usual softmax
    and logsumexp of a row give back exactly those two.
    """
    distributions = candidate_probs(logprobs)
    if clamp is not None:
        distributions[:, 0] = np.clip(distributions[:, 0], *clamp)
        distributions[:, 1:] = (1 - distributions[:, :1]) * distributions[:, 1:] / \
            np.maximum(distributions[:, 1:].sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(distributions.mean(axis=0) * candidate_mass(logprobs).mean())


def label_pairs(pairs: Sequence[PreferencePair], backend: LabelBackend, template: PromptTemplate, *,
                chat_template: bool = False, out: str | Path | None = None, fresh: bool = False,
                prompting: Prompting | None = None, pairs_per_step: int | None = None,
                max_prompt_tokens: int | None = None, progress: bool = True,
                shard: tuple[int, int] | None = None, both_orders: bool = True) -> pd.DataFrame:
    """Label every pair in both orders; one row per pair, in input order.

    ``prompting`` switches on few-shot, chain-of-thought, preamble ensembles
    (default: the template's preamble, 0-shot, no CoT). Several prompts for one
    order (preambles, sampled rationales) are combined by averaging their label
    probabilities. With ``out``, each step's rows are appended to disk as they
    finish and a rerun with the same settings skips the pairs already labeled
    (``fresh`` starts over). Steps are fixed slices of ``pairs``, so a resumed run
    scores the same batches as an uninterrupted one. ``pairs_per_step`` defaults
    to the backend's ``pairs_per_step`` (8 for in-process transformers, more for
    engines that batch themselves). ``max_prompt_tokens`` defaults to the backend's
    limit. ``shard=(i, n)`` labels only the i-th of n slices (see ``rlaif.shards``).
    ``both_orders=False`` asks the first order only (half the prompts, rows record
    ``orders: 1``): p keeps the labeler's position bias unless a prior is divided out
    afterwards, which is what ``rlaif.pride`` does.
    """
    builder = PairPrompts(template, backend, chat_template, prompting or Prompting())
    prompting = builder.prompting  # preambles resolved
    this_run = run_id(backend, template, chat_template, prompting, max_prompt_tokens, both_orders)
    if max_prompt_tokens is None:
        max_prompt_tokens = backend.max_prompt_tokens
    run_info = {"model": backend.fingerprint()["model"], "template": template.name,
                "template_hash": template.fingerprint, "labels": list(template.labels),
                "chat_template": chat_template, "run_id": this_run}
    if prompting != Prompting(preambles=(template.preamble,)):
        run_info["prompting"] = prompting.describe()
    if not both_orders:
        run_info["orders"] = 1
    pairs = take_shard(pairs, shard, run_info)
    return run_in_steps(pairs, this_run, out, fresh, pairs_per_step or backend.pairs_per_step, progress,
                        lambda step: _label_step(step, builder, template, run_info, max_prompt_tokens, both_orders))


def _label_step(step: Sequence[PreferencePair], builder: PairPrompts, template: PromptTemplate,
                run_info: dict[str, Any], max_prompt_tokens: int | None,
                both_orders: bool = True) -> list[dict[str, Any]]:
    """One step: fit contexts, generate rationales (CoT), score every label prompt in one call, combine."""
    prompting, backend = builder.prompting, builder.backend
    rows, scored, extras, entries = [], [], [], []  # entries: (pair index, order, preamble, message, ending)
    for pair in step:
        context, truncated, reason = fit_context(pair, builder, max_prompt_tokens)
        if reason:
            rows.append(skipped_row(pair, reason, run_info))
            continue
        entries += [(len(scored), *entry) for entry in builder.first_step(pair, context)
                    if both_orders or entry[0] == 0]
        scored.append(pair)
        extras.append({"truncated": truncated})
    if not scored:
        return rows
    rationales: list[list[str | None]] = [[None]] * len(entries)
    if prompting.cot:
        rationales = backend.generate([builder.rationale_prompt(e[3]) for e in entries],
                                      max_new_tokens=prompting.cot_max_tokens, temperature=prompting.cot_temperature,
                                      n=prompting.cot_samples, seed=prompting.seed,
                                      stop=["\n\n", template.render("", "", "").ending.strip()])
    texts, owners = [], []  # owners: (pair index, order) of each label prompt
    for entry, thoughts in zip(entries, rationales):
        for thought in thoughts:
            texts.append(builder.label_prompt(entry[3], entry[4], thought))
            owners.append((entry[0], entry[1]))
    logprobs = backend.label_logprobs(texts, template.labels)
    per_order = np.full((2, len(scored), len(template.labels)), np.nan)
    for index in range(len(scored)):
        for order in (0, 1) if both_orders else (0,):
            mine = [k for k, owner in enumerate(owners) if owner == (index, order)]
            per_order[order, index] = _combine(logprobs[mine], prompting.clamp)
    if prompting.cot or len(prompting.preambles) > 1 or prompting.shots:
        for index, extra in enumerate(extras):
            mine = [(entry, thoughts) for entry, thoughts in zip(entries, rationales) if entry[0] == index]
            extra["preambles"] = sorted({entry[2] for entry, _ in mine})
            if prompting.cot:
                extra["rationales_first_order"] = [t for entry, ts in mine if entry[1] == 0 for t in ts]
                extra["rationales_swapped_order"] = [t for entry, ts in mine if entry[1] == 1 for t in ts]
    return rows + pairwise_rows(scored, extras, per_order[0], per_order[1], template.asks_more_harmful, run_info,
                                both_orders)
