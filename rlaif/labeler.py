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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlaif.backends.base import LabelBackend
from rlaif.direct_scores import SCORE_LABELS, DirectScorer
from rlaif.label_store import LabelStore, StoreError
from rlaif.pairs import PreferencePair
from rlaif.prompting import PairPrompts, Prompting
from rlaif.shards import shard_slice
from rlaif.soft_labels import candidate_mass, candidate_probs, choice, swap_average
from rlaif.templates import PromptTemplate

TRUNCATION_MARK = "[...] "
#: Rows whose mean candidate mass is below this are flagged: the model is not answering with a label.
LOW_MASS = 0.01


def build_prompts(pair: PreferencePair, template: PromptTemplate, backend: LabelBackend,
                  chat_template: bool, context: str | None = None) -> tuple[str, str]:
    """The plain labeler's prompt in the first order (response 1 shown first) and the swapped order."""
    builder = PairPrompts(template, backend, chat_template, Prompting())
    first, swapped = builder.first_step(pair, context)
    return builder.label_prompt(*first[2:]), builder.label_prompt(*swapped[2:])


def _longest_prompt(builder: PairPrompts, pair: PreferencePair, context: str) -> int:
    """Tokens in the longest prompt this pair sends (a rationale counted at its maximum length)."""
    entries = builder.first_step(pair, context)
    rationale = "" if builder.prompting.cot else None  # a rationale's own tokens are added below
    texts = [builder.label_prompt(message, ending, rationale) for _, _, message, ending in entries]
    extra = builder.prompting.cot_max_tokens if builder.prompting.cot else 0
    longest_label = max(builder.backend.count_tokens(list(builder.template.labels)))
    return max(builder.backend.count_tokens(texts)) + extra + longest_label


def cut_context(context: str, fits: Callable[[str], bool]) -> str | None:
    """The longest end of ``context``, marked with TRUNCATION_MARK, for which ``fits`` holds
    (binary search over characters kept); None when not even the mark alone fits."""
    def cut(keep: int) -> str:
        return TRUNCATION_MARK + context[len(context) - keep:] if keep else TRUNCATION_MARK

    if not fits(cut(0)):
        return None
    low, high = 0, len(context)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(cut(mid)) else (low, mid - 1)
    return cut(low)


def fit_context(pair: PreferencePair, builder: PairPrompts,
                max_tokens: int | None) -> tuple[str | None, bool, str | None]:
    """(context to use, context_truncated, skipped_reason) under the context-length policy above."""
    if max_tokens is None or _longest_prompt(builder, pair, pair.context) <= max_tokens:
        return pair.context, False, None
    context = cut_context(pair.context, lambda text: _longest_prompt(builder, pair, text) <= max_tokens)
    if context is None:
        shortest = _longest_prompt(builder, pair, TRUNCATION_MARK)
        return None, False, f"the responses alone make a {shortest}-token prompt; the model takes {max_tokens}"
    return context, True, None


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
        settings["prompting"] = prompting.describe()  # the plain labeler keeps the run ids it always had
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pair_hash(pair: PreferencePair) -> str:
    """Hash of what is judged, so a resumed run notices different data under the same ids."""
    payload = json.dumps([pair.context, pair.response_1, pair.response_2, pair.human_choice], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


#: Rows with these flags are labeled again on resume: a failure is never served as a result.
RETRY_FLAGS = ("nonfinite_logprobs", "skipped")


def _row(pair: PreferencePair, run_info: dict[str, Any], **values) -> dict[str, Any]:
    return {"id": pair.id, "pair_hash": pair_hash(pair), "task": pair.task, **values, "human_choice": pair.human_choice,
            "length_1": len(pair.response_1), "length_2": len(pair.response_2), **run_info, "metadata": pair.metadata}


def _scored_rows(pairs: Sequence[PreferencePair], extras: Sequence[dict[str, Any]], logprobs_first,
                 logprobs_swapped, template: PromptTemplate, run_info: dict[str, Any],
                 both_orders: bool = True) -> list[dict[str, Any]]:
    """Rows from each order's label log-probs. Without ``both_orders`` the swapped order was not
    asked: its fields are null and p is the first order's (position bias and all)."""
    soft = swap_average(logprobs_first, logprobs_swapped, template.asks_more_harmful)
    if not both_orders:
        soft["p"] = soft["p_first_order"]
        soft["ai_choice"] = choice(soft["p"])
    mass_first, mass_swapped = candidate_mass(logprobs_first), candidate_mass(logprobs_swapped)
    rows = []
    for i, pair in enumerate(pairs):
        finite = bool(np.all(np.isfinite(logprobs_first[i])) and
                      (not both_orders or np.all(np.isfinite(logprobs_swapped[i]))))
        mass = float((mass_first[i] + mass_swapped[i]) / 2) if both_orders else float(mass_first[i])
        flags = [name for name, on in (("nonfinite_logprobs", not finite), ("low_candidate_mass", finite and mass < LOW_MASS),
                                       ("context_truncated", extras[i]["truncated"])) if on]
        number = (lambda x: float(x)) if finite else (lambda x: None)
        swapped = number if both_orders else (lambda x: None)
        rows.append(_row(
            pair, run_info,
            p_first_order=number(soft["p_first_order"][i]),
            p_swapped_order=swapped(soft["p_swapped_order"][i]),
            p=number(soft["p"][i]),
            ai_choice=int(soft["ai_choice"][i]) if finite else None,
            position_first_order=int(soft["position_first_order"][i]) if finite else None,
            position_swapped_order=int(soft["position_swapped_order"][i]) if finite and both_orders else None,
            # JSON has no NaN/inf: a non-finite log-prob is written as null and flagged
            logprobs_first_order=[float(x) if np.isfinite(x) else None for x in logprobs_first[i]],
            logprobs_swapped_order=[float(x) if np.isfinite(x) else None for x in logprobs_swapped[i]]
            if both_orders else None,
            mass_first_order=number(mass_first[i]),
            mass_swapped_order=swapped(mass_swapped[i]),
            candidate_mass=number(mass),
            flags=flags,
            skipped_reason=None,
            **{key: value for key, value in extras[i].items() if key != "truncated"},
        ))
    return rows


def _skipped_row(pair: PreferencePair, reason: str, run_info: dict[str, Any]) -> dict[str, Any]:
    empty = dict.fromkeys(("p_first_order", "p_swapped_order", "p", "ai_choice", "position_first_order",
                           "position_swapped_order", "logprobs_first_order", "logprobs_swapped_order",
                           "mass_first_order", "mass_swapped_order", "candidate_mass"))
    return _row(pair, run_info, **empty, flags=["skipped"], skipped_reason=reason)





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
        max_prompt_tokens = getattr(backend, "max_prompt_tokens", None)
    run_info = {"model": backend.fingerprint()["model"], "template": template.name,
                "template_hash": template.fingerprint, "labels": list(template.labels),
                "chat_template": chat_template, "run_id": this_run}
    if prompting != Prompting(preambles=(template.preamble,)):
        run_info["prompting"] = prompting.describe()
    if not both_orders:
        run_info["orders"] = 1
    pairs = _take_shard(pairs, shard, run_info)
    return _run_steps(pairs, this_run, out, fresh, pairs_per_step or getattr(backend, "pairs_per_step", 8), progress,
                      lambda step: _label_step(step, builder, template, run_info, max_prompt_tokens, both_orders))


def _take_shard(pairs: Sequence[PreferencePair], shard: tuple[int, int] | None,
                run_info: dict[str, Any]) -> Sequence[PreferencePair]:
    """The shard's slice of ``pairs``; its rows record the shard and its size, so a merge can check it is whole."""
    if shard is None:
        return pairs
    pairs = shard_slice(pairs, *shard)
    run_info.update(shard=f"{shard[0]}/{shard[1]}", shard_pairs=len(pairs))
    return pairs


def _run_steps(pairs: Sequence[PreferencePair], this_run: str, out: str | Path | None, fresh: bool,
               pairs_per_step: int, progress: bool,
               label_step: Callable[[list[PreferencePair]], list[dict[str, Any]]]) -> pd.DataFrame:
    """Fixed slices of ``pairs``; each slice's rows appended to the store as it finishes; resumable."""
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pair ids must be unique; {duplicate!r} appears more than once")
    store = LabelStore(out, this_run, fresh=fresh) if out is not None else None
    done = dict(store.done) if store else {}
    by_id = {pair.id: pair for pair in pairs}
    for pair_id, row in list(done.items()):
        if pair_id in by_id and row.get("pair_hash") not in (None, pair_hash(by_id[pair_id])):
            raise StoreError(f"{out}: the pair with id {pair_id!r} there differs from the one being labeled now "
                             "(different data under the same ids?); use another --out, or --fresh")
        if set(row.get("flags") or ()) & set(RETRY_FLAGS):
            del done[pair_id]
    with tqdm(total=len(pairs), initial=sum(pair_id in done for pair_id in ids), desc="labeling pairs",
              unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), pairs_per_step):
            step = [pair for pair in pairs[start:start + pairs_per_step] if pair.id not in done]
            if not step:
                continue
            rows = label_step(step)
            if store:
                store.append(rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(step))
    ordered = [done[pair_id] for pair_id in ids]
    if store:
        store.finish(ordered)
    return pd.DataFrame(ordered)


def _label_step(step: Sequence[PreferencePair], builder: PairPrompts, template: PromptTemplate,
                run_info: dict[str, Any], max_prompt_tokens: int | None,
                both_orders: bool = True) -> list[dict[str, Any]]:
    """One step: fit contexts, generate rationales (CoT), score every label prompt in one call, combine."""
    prompting, backend = builder.prompting, builder.backend
    rows, scored, extras, entries = [], [], [], []  # entries: (pair index, order, preamble, message, ending)
    for pair in step:
        context, truncated, reason = fit_context(pair, builder, max_prompt_tokens)
        if reason:
            rows.append(_skipped_row(pair, reason, run_info))
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
    return rows + _scored_rows(scored, extras, per_order[0], per_order[1], template, run_info, both_orders)


def score_pairs(pairs: Sequence[PreferencePair], scorer: DirectScorer, *, out: str | Path | None = None,
                fresh: bool = False, pairs_per_step: int | None = None, progress: bool = True,
                shard: tuple[int, int] | None = None) -> pd.DataFrame:
    """Direct scoring as a pairwise labeler: each response scored alone, P(1 preferred) = sigmoid(s1 - s2).

    Rows have the same fields as ``label_pairs`` (so the same report applies) plus
    ``score_1``, ``score_2``. Both "orders" hold the same p: a pointwise score cannot
    prefer a position, so the report shows no position bias.
    """
    fingerprint = scorer.fingerprint()
    this_run = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]
    run_info = {"model": fingerprint["model"], "template": f"{scorer.template.task}/direct-score",
                "template_hash": scorer.template.fingerprint, "labels": list(SCORE_LABELS),
                "chat_template": scorer.chat_template, "run_id": this_run}

    def step(chunk: list[PreferencePair]) -> list[dict[str, Any]]:
        scored = scorer.score([p.context for p in chunk for _ in (1, 2)],
                              [r for p in chunk for r in (p.response_1, p.response_2)])
        rows = []
        for i, pair in enumerate(chunk):
            s1, s2 = scored["score"][2 * i], scored["score"][2 * i + 1]
            mass = float((scored["mass"][2 * i] + scored["mass"][2 * i + 1]) / 2)
            finite = bool(np.isfinite(s1) and np.isfinite(s2))
            p = float(1 / (1 + np.exp(-(s1 - s2)))) if finite else None
            flags = [f for f, on in (("nonfinite_logprobs", not finite), ("low_candidate_mass", finite and mass < LOW_MASS)) if on]
            rows.append(_row(pair, run_info, p_first_order=p, p_swapped_order=p, p=p,
                             ai_choice=int(choice(np.array([p]))[0]) if finite else None,
                             position_first_order=(1 if p >= 0.5 else 2) if finite else None,
                             position_swapped_order=(2 if p >= 0.5 else 1) if finite else None,
                             logprobs_first_order=None, logprobs_swapped_order=None,
                             mass_first_order=mass, mass_swapped_order=mass, candidate_mass=mass,
                             score_1=float(s1) if np.isfinite(s1) else None,
                             score_2=float(s2) if np.isfinite(s2) else None, flags=flags, skipped_reason=None))
        return rows

    pairs = _take_shard(pairs, shard, run_info)
    return _run_steps(pairs, this_run, out, fresh, pairs_per_step or getattr(scorer.backend, "pairs_per_step", 8),
                      progress, step)
