"""The labels table: one row per pair, written by every labeler and read by every analysis.

Producers (``label_pairs``, ``score_pairs``, PriDe, reward models as labelers, shard
merges) build rows only through this module; consumers (report, metrics, experiments)
decide which rows count only through ``scored``. A table read back from JSON may hold
None/NaN and floats (1.0) where ints were written; ``scored`` reads through that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rlaif.pairs import TIE, PreferencePair
from rlaif.soft_labels import candidate_mass, choice, swap_average

#: Every column a labeler writes, in the order rows hold them. Labelers may add their own
#: (``score_1``/``score_2``, ``reward_1``/``reward_2``, ``preambles``, ``rationales_*``, ``shard``, ...).
COLUMNS = {
    "id": "the pair's id, unique within a run",
    "pair_hash": "hash of context, responses and human label: a resumed run notices changed data",
    "task": "the task the pair belongs to (picks the template)",
    "p_first_order": "P(response 1 preferred) with response 1 shown first",
    "p_swapped_order": "P(response 1 preferred) with response 2 shown first (null: one order asked)",
    "p": "the soft label: both orders averaged (null for skipped or failed rows)",
    "ai_choice": f"1, 2, or {TIE} where p is exactly 0.5",
    "position_first_order": "the position (1 or 2) the labeler preferred in the first order",
    "position_swapped_order": "the position it preferred in the swapped order",
    "logprobs_first_order": "the raw label log-probs, first order (null where not finite)",
    "logprobs_swapped_order": "the raw label log-probs, swapped order",
    "mass_first_order": "probability mass on the candidate labels, first order",
    "mass_swapped_order": "the same, swapped order",
    "candidate_mass": "mean of the two masses",
    "flags": "context_truncated, skipped, nonfinite_logprobs, low_candidate_mass",
    "skipped_reason": "why the pair was not sent to the model (null otherwise)",
    "human_choice": f"1, 2, {TIE} (tie) or null (unlabeled)",
    "length_1": "characters in response 1",
    "length_2": "characters in response 2",
    "model": "the labeler's model",
    "template": "task/template the prompts came from",
    "template_hash": "hash of the template files",
    "labels": "the candidate label strings",
    "chat_template": "whether prompts were wrapped in the model's chat template",
    "run_id": "hash of every setting that changes a label (see settings_hash)",
    "metadata": "the pair's metadata, as loaded",
}
#: The columns that hold a label; null in a row that has none (skipped or failed).
LABEL_COLUMNS = ("p_first_order", "p_swapped_order", "p", "ai_choice", "position_first_order",
                 "position_swapped_order", "logprobs_first_order", "logprobs_swapped_order",
                 "mass_first_order", "mass_swapped_order", "candidate_mass")
#: Rows whose mean candidate mass is below this are flagged: the model is not answering with a label.
LOW_MASS = 0.01
#: Rows with these flags are labeled again on resume: a failure is never served as a result.
RETRY_FLAGS = ("nonfinite_logprobs", "skipped")


def settings_hash(settings: dict[str, Any]) -> str:
    """The run id: a short hash of everything that changes a label. Two runs resume into each
    other's files only when it is equal."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pair_hash(pair: PreferencePair) -> str:
    """Hash of what is judged, so a resumed run notices different data under the same ids."""
    payload = json.dumps([pair.context, pair.response_1, pair.response_2, pair.human_choice], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def row(pair: PreferencePair, run_info: dict[str, Any], **values) -> dict[str, Any]:
    """One row: the pair's fields around the labeler's ``values``, then ``run_info``."""
    return {"id": pair.id, "pair_hash": pair_hash(pair), "task": pair.task, **values, "human_choice": pair.human_choice,
            "length_1": len(pair.response_1), "length_2": len(pair.response_2), **run_info, "metadata": pair.metadata}


def pairwise_rows(pairs: Sequence[PreferencePair], extras: Sequence[dict[str, Any]], logprobs_first: np.ndarray,
                  logprobs_swapped: np.ndarray, asks_more_harmful: bool, run_info: dict[str, Any],
                  both_orders: bool = True) -> list[dict[str, Any]]:
    """Rows from each order's label log-probs. Without ``both_orders`` the swapped order was not
    asked: its fields are null and p is the first order's (position bias and all). ``extras[i]``
    holds ``truncated`` (the context was cut) and any columns of the labeler's own."""
    soft = swap_average(logprobs_first, logprobs_swapped, asks_more_harmful)
    if not both_orders:
        soft["p"] = soft["p_first_order"]
        soft["ai_choice"] = choice(soft["p"])
    mass_first, mass_swapped = candidate_mass(logprobs_first), candidate_mass(logprobs_swapped)
    rows = []
    for i, pair in enumerate(pairs):
        finite = bool(np.all(np.isfinite(logprobs_first[i])) and
                      (not both_orders or np.all(np.isfinite(logprobs_swapped[i]))))
        mass = float((mass_first[i] + mass_swapped[i]) / 2) if both_orders else float(mass_first[i])
        flags = [name for name, on in (("nonfinite_logprobs", not finite),
                                       ("low_candidate_mass", finite and mass < LOW_MASS),
                                       ("context_truncated", extras[i]["truncated"])) if on]
        number = (lambda x: float(x)) if finite else (lambda x: None)
        swapped = number if both_orders else (lambda x: None)
        rows.append(row(
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


def skipped_row(pair: PreferencePair, reason: str, run_info: dict[str, Any]) -> dict[str, Any]:
    """A pair that was not sent to the model: no label, flagged ``skipped``, with the reason."""
    return row(pair, run_info, **dict.fromkeys(LABEL_COLUMNS), flags=["skipped"], skipped_reason=reason)


def pointwise_row(pair: PreferencePair, run_info: dict[str, Any], value_1: float, value_2: float, *,
                  names: tuple[str, str], mass: float = 1.0) -> dict[str, Any]:
    """A pair judged by scoring each response alone (a direct 1-10 score, a reward model):
    p = sigmoid(value_1 - value_2). Both orders hold that p, since a pointwise score cannot
    prefer a position; the two values are kept under ``names``."""
    finite = bool(np.isfinite(value_1) and np.isfinite(value_2))
    p = float(1 / (1 + np.exp(-(value_1 - value_2)))) if finite else None
    flags = [flag for flag, on in (("nonfinite_logprobs", not finite),
                                   ("low_candidate_mass", finite and mass < LOW_MASS))
             if on]
    return row(pair, run_info, p_first_order=p, p_swapped_order=p, p=p,
               ai_choice=int(choice(np.array([p]))[0]) if finite else None,
               position_first_order=(1 if p >= 0.5 else 2) if finite else None,
               position_swapped_order=(2 if p >= 0.5 else 1) if finite else None,
               logprobs_first_order=None, logprobs_swapped_order=None,
               mass_first_order=mass, mass_swapped_order=mass, candidate_mass=mass,
               **{names[0]: float(value_1) if np.isfinite(value_1) else None,
                  names[1]: float(value_2) if np.isfinite(value_2) else None},
               flags=flags, skipped_reason=None)


# ------------------------------------------------------------------------------------ reading


def numeric(labels: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 (None, strings that are not numbers -> NaN); all-NaN if the column is absent."""
    if column not in labels:
        return np.full(len(labels), np.nan)
    return pd.to_numeric(labels[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def check_tie_band(tie_band: float) -> None:
    if not 0.0 <= tie_band <= 0.5:
        raise ValueError(f"tie_band must be in [0, 0.5], got {tie_band!r}")


def ai_choices(labels: pd.DataFrame, tie_band: float = 0.0) -> np.ndarray:
    """ai_choice per row as floats (1, 2, 0; NaN where p is not valid).

    The table's ``ai_choice`` is used where present; where it is missing but p is
    valid it is derived from p (``soft_labels.choice``). Then the tie band applies:
    a valid row with ``|p - 0.5| < tie_band`` is an AI tie.
    """
    check_tie_band(tie_band)
    p = numeric(labels, "p")
    valid = np.isfinite(p)
    ai = numeric(labels, "ai_choice")
    derived = choice(np.where(valid, p, 0.5)).astype(np.float64)
    ai = np.where(np.isnan(ai), derived, ai)
    ai[~valid] = np.nan
    if tie_band > 0:
        ai[valid & (np.abs(p - 0.5) < tie_band)] = TIE
    return ai


def scored_mask(p: Sequence[float] | np.ndarray, human_choice: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Which rows are scored: a finite p (or finite row of values) and a human choice of 1 or 2.
    Human ties and unlabeled rows are counted elsewhere, never scored."""
    values = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(values) if values.ndim == 1 else np.all(np.isfinite(values), axis=1)
    human = pd.to_numeric(pd.Series(list(human_choice), dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    return finite & np.isin(human, (1.0, 2.0))


def scored(labels: pd.DataFrame, tie_band: float = 0.0) -> pd.DataFrame:
    """The scored rows (see ``scored_mask``).

    Returns a copy of those rows (original index kept) with ``p`` as float,
    ``ai_choice`` and ``human_choice`` as int (``ai_choice`` after the tie band:
    0 where ``|p - 0.5| < tie_band``), and a bool column
    ``agree = (ai_choice == human_choice)``.
    """
    p = numeric(labels, "p")
    human = numeric(labels, "human_choice")
    ai = ai_choices(labels, tie_band)
    mask = scored_mask(p, human)
    out = labels.loc[mask].copy()
    out["p"] = p[mask]
    out["ai_choice"] = ai[mask].astype(int)
    out["human_choice"] = human[mask].astype(int)
    out["agree"] = out["ai_choice"].to_numpy() == out["human_choice"].to_numpy()
    return out
