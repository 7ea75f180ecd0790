"""Agreement with people: alignment and its intervals, kappas, several annotators, two labelers.

A labels table has one row per pair (``rlaif.labels_table``): ``p`` is the
swap-averaged P(response 1 preferred) (missing for skipped or failed rows),
``ai_choice`` is 1, 2 or ``TIE`` (0), ``human_choice`` is 1, 2, ``TIE`` or missing.
Tables read back from JSON may hold None/NaN and floats (1.0) in these columns;
every function in ``rlaif.analysis`` reads them through ``rlaif.labels_table``'s
coercion, so both forms work.

Conventions shared by every module of ``rlaif.analysis`` (stated here once):

* A row is *valid* when ``p`` is a finite number.
* A row is *scored* when it is valid and ``human_choice`` is 1 or 2 (human ties
  and unlabeled rows are counted, never scored): ``rlaif.labels_table.scored``.
* ``tie_band`` (>= 0): a valid row with ``|p - 0.5| < tie_band`` is an AI tie
  (``ai_choice`` 0). An AI tie never equals a scored human choice, so it counts
  as a disagreement. With ``tie_band=0`` only an exact ``p == 0.5`` is a tie.
* Functions return NaN (never raise) when there is nothing to compute on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rlaif.analysis.intervals import bootstrap_mean_ci, mean_or_nan
from rlaif.labels_table import ai_choices, numeric, scored, scored_mask
from rlaif.pairs import TIE


def _human_choice_lists(labels: pd.DataFrame) -> list[list[int]]:
    """metadata["human_choices"] per row (entries that are not 1, 2 or 0 dropped; [] when absent)."""
    if "metadata" not in labels:
        return [[] for _ in range(len(labels))]
    out = []
    for meta in labels["metadata"]:
        choices = meta.get("human_choices") if isinstance(meta, dict) else None
        if not isinstance(choices, (list, tuple, np.ndarray)):
            out.append([])
            continue
        kept = []
        for c in choices:
            try:
                value = float(c)
            except (TypeError, ValueError):
                continue
            if value in (1.0, 2.0, float(TIE)):
                kept.append(int(value))
        out.append(kept)
    return out


# --------------------------------------------------------------------------- alignment


def alignment(labels: pd.DataFrame, tie_band: float = 0.0) -> float:
    """Share of scored pairs where the AI agrees with people.

    alignment = (1/N) * sum_i [ai_choice_i == human_choice_i] over the N scored
    rows (see ``scored``); an AI tie is a disagreement. NaN when N = 0.
    """
    return mean_or_nan(scored(labels, tie_band)["agree"].to_numpy(dtype=np.float64))


def alignment_ci(labels: pd.DataFrame, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 tie_band: float = 0.0, method: str = "percentile",
                 clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Alignment with a bootstrap confidence interval.

    alignment = mean of a_i = [ai_choice_i == human_choice_i] over the n scored
    rows. The interval is ``scipy.stats.bootstrap`` on the a_i with the mean as
    statistic (``method`` "percentile" by default, or "BCa" / "basic"): the
    (1-confidence)/2 and (1+confidence)/2 quantiles of the mean over
    ``n_resamples`` resamples with replacement, seeded by ``seed``.
    n = 0: all NaN. n = 1 or all a_i equal: low = high = alignment (every
    resample gives the same mean; the interval is then no measure of uncertainty).

    ``clusters``: one key per row of ``labels`` (e.g. the pair's instruction); whole
    clusters are then resampled (see ``rlaif.analysis.intervals.bootstrap_mean_ci``).

    Returns dict(alignment, low, high, n).
    """
    if clusters is not None:
        if len(clusters) != len(labels):
            raise ValueError(f"clusters must have one entry per row of labels, got {len(clusters)} for {len(labels)}")
        labels = labels.assign(_cluster=list(clusters))
    rows = scored(labels, tie_band)
    agree = rows["agree"].to_numpy(dtype=np.float64)
    mean, low, high = bootstrap_mean_ci(agree, confidence, n_resamples, seed, method,
                                        None if clusters is None else rows["_cluster"].tolist())
    return {"alignment": mean, "low": low, "high": high, "n": int(len(agree))}


def alignment_by_group(labels: pd.DataFrame, by: str | Sequence[str] = "task", **ci_kwargs) -> pd.DataFrame:
    """``alignment_ci`` per group of rows (default: per ``task``).

    One row per group value present in ``labels`` (a missing value is its own
    group; a group with no scored rows has n = 0 and NaNs), sorted by group.
    ``ci_kwargs`` go to ``alignment_ci`` (confidence, n_resamples, seed, tie_band, method);
    every group uses the same seed. Columns: alignment, low, high, n.
    """
    columns = ["alignment", "low", "high", "n"]
    rows, keys = [], []
    if len(labels):
        for key, group in labels.groupby(by, dropna=False, sort=True):
            keys.append(key)
            rows.append(alignment_ci(group, **ci_kwargs))
    if isinstance(by, str):
        index = pd.Index(keys, name=by)
    else:
        index = pd.MultiIndex.from_tuples(keys, names=list(by)) if keys else pd.MultiIndex.from_arrays(
            [[] for _ in by], names=list(by))
    out = pd.DataFrame(rows, index=index, columns=columns)
    out["n"] = out["n"].astype(int)
    return out


# --------------------------------------------------------------------------- kappa


def cohens_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa between two raters' categorical labels of the same items.

    kappa = (p_o - p_e) / (1 - p_e), with p_o = (1/N) sum_i [a_i == b_i] and
    p_e = sum_k (n_a(k)/N) (n_b(k)/N) over the categories k of either rater.
    Positions where either label is missing (None/NaN) are dropped first.
    Degenerate case p_e == 1 (both raters used one and the same category for
    every item): kappa is undefined (0/0) and NaN is returned (as scikit-learn
    does), even though p_o = 1. Empty input: NaN.
    """
    a_s, b_s = pd.Series(list(a), dtype=object), pd.Series(list(b), dtype=object)
    if len(a_s) != len(b_s):
        raise ValueError(f"cohens_kappa needs equal lengths, got {len(a_s)} and {len(b_s)}")
    keep = (a_s.notna() & b_s.notna()).to_numpy()
    a_s, b_s = a_s[keep], b_s[keep]
    n = len(a_s)
    if n == 0:
        return math.nan
    codes, _ = pd.factorize(pd.concat([a_s, b_s], ignore_index=True))
    ca, cb = codes[:n], codes[n:]
    k = int(codes.max()) + 1
    if k == 1:
        return math.nan
    p_o = float(np.mean(ca == cb))
    p_e = float(np.dot(np.bincount(ca, minlength=k), np.bincount(cb, minlength=k))) / n**2
    if p_e >= 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def ai_human_kappa(labels: pd.DataFrame, tie_band: float = 0.0) -> float:
    """Cohen's kappa (``cohens_kappa``) between ai_choice and human_choice over the scored rows.

    AI ties (0) are a third category of the AI rater; human choices are 1 or 2.
    """
    rows = scored(labels, tie_band)
    return cohens_kappa(rows["ai_choice"].to_numpy(), rows["human_choice"].to_numpy())


# --------------------------------------------------------------------------- several annotators


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts n_ij.

    With n_i = sum_j n_ij raters of item i (n_i >= 2; the number may differ
    between items, the usual generalization):
    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))   (share of agreeing rater pairs),
    P_bar = mean_i P_i,  p_j = sum_i n_ij / sum_i n_i,  P_e = sum_j p_j^2,
    kappa = (P_bar - P_e) / (1 - P_e). NaN with no items or when P_e == 1.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return math.nan
    n_i = counts.sum(axis=1)
    if np.any(n_i < 2):
        raise ValueError("every item needs at least 2 ratings")
    p_i = (np.sum(counts**2, axis=1) - n_i) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float(np.sum(p_j**2))
    if p_e >= 1.0:
        return math.nan
    return (float(np.mean(p_i)) - p_e) / (1.0 - p_e)


def human_agreement(labels: pd.DataFrame) -> dict[str, Any]:
    """Agreement among several human annotators, from ``metadata["human_choices"]``.

    Rows with fewer than 2 annotator choices are ignored; ties (0) are a category.
    For row i with m_i choices: A_i = (agreeing annotator pairs) / (m_i (m_i - 1) / 2).
    mean_pairwise_agreement = mean_i A_i (each pair of responses weighs the same);
    fleiss_kappa = ``fleiss_kappa`` of the per-row counts of choices 1, 2, 0.
    annotator_vs_majority = each annotator's choice against the strict majority of the
    other annotators of the same row, over the (row, annotator) cases where that majority
    is 1 or 2: one person scored the way ``alignment`` scores the AI against the majority
    label (an annotator's tie counts as a disagreement, as an AI tie does);
    annotator_vs_majority_n = the number of such cases.
    pairs = number of rows used (pairs of responses, not annotator pairs);
    with none: pairs = 0 and NaNs.
    """
    lists = [c for c in _human_choice_lists(labels) if len(c) >= 2]
    if not lists:
        return {"pairs": 0, "mean_pairwise_agreement": math.nan, "fleiss_kappa": math.nan,
                "annotator_vs_majority": math.nan, "annotator_vs_majority_n": 0}
    categories = (1, 2, TIE)
    counts = np.array([[c.count(k) for k in categories] for c in lists], dtype=np.float64)
    m = counts.sum(axis=1)
    pairwise = (np.sum(counts * (counts - 1) / 2, axis=1)) / (m * (m - 1) / 2)
    against_majority = [case for choices in lists for case in annotator_vs_majority_cases(choices)]
    return {"pairs": len(lists), "mean_pairwise_agreement": float(np.mean(pairwise)),
            "fleiss_kappa": fleiss_kappa(counts),
            "annotator_vs_majority": mean_or_nan(np.asarray(against_majority, dtype=np.float64)),
            "annotator_vs_majority_n": len(against_majority)}


def annotator_vs_majority_cases(choices: list[int]) -> list[bool]:
    """For one pair's annotator choices: each annotator's agreement with the strict majority of
    the others, for the annotators whose others have a majority of 1 or 2."""
    return [choices[j] == majority for j in range(len(choices))
            if (majority := strict_majority(choices[:j] + choices[j + 1:])) in (1, 2)]


def strict_majority(choices: list[int]) -> int | None:
    """The choice more than half of ``choices`` made, or None (a split, or no choices)."""
    if not choices:
        return None
    values, counts = np.unique(choices, return_counts=True)
    top = int(np.argmax(counts))
    return int(values[top]) if 2 * counts[top] > len(choices) else None


def ai_vs_annotators(labels: pd.DataFrame, tie_band: float = 0.0) -> float:
    """Mean agreement of the AI choice with each individual annotator.

    Over the rows that ``human_agreement`` uses (at least 2 annotator choices) and
    that have a valid p: for row i with choices c_i1..c_im,
    B_i = (1/m) sum_j [ai_choice_i == c_ij], and the result is mean_i B_i. This is
    the AI counted as one more annotator, comparable with
    ``human_agreement(...)["mean_pairwise_agreement"]`` (the average agreement of
    one person with another on the same kind of rows). A human tie (0) agrees only
    with an AI tie. NaN when no row qualifies.
    """
    ai = ai_choices(labels, tie_band)
    per_row = [np.mean(np.asarray(c) == ai[i])
               for i, c in enumerate(_human_choice_lists(labels)) if len(c) >= 2 and not np.isnan(ai[i])]
    return mean_or_nan(np.asarray(per_row, dtype=np.float64))


# --------------------------------------------------------------------------- counts


def tie_counts(labels: pd.DataFrame, tie_band: float = 0.0) -> dict[str, int]:
    """Counts over all rows.

    human_ties: human_choice == 0; unlabeled: human_choice missing;
    invalid: p missing or not finite (skipped / failed rows);
    ai_ties: valid rows whose ai_choice is 0 after the tie band (|p - 0.5| < tie_band, or exactly 0.5).
    """
    human = numeric(labels, "human_choice")
    p = numeric(labels, "p")
    ai = ai_choices(labels, tie_band)
    return {"human_ties": int(np.sum(human == TIE)), "ai_ties": int(np.sum(ai == TIE)),
            "unlabeled": int(np.sum(np.isnan(human))), "invalid": int(np.sum(~np.isfinite(p)))}


# --------------------------------------------------------------------------- two labelers


def labeler_agreement(a: pd.DataFrame, b: pd.DataFrame, tie_band: float = 0.0) -> dict[str, Any]:
    """Compare two labeling runs of the same pairs (joined on ``id``).

    common_pairs: ids valid (finite p) in both tables; over them
    agreement = mean [ai_choice_a == ai_choice_b] and kappa = ``cohens_kappa``(ai_choice_a, ai_choice_b).
    On the pairs scored in both (common and human_choice 1 or 2; human choices come
    from ``a`` and must not contradict ``b``'s): alignment_a, alignment_b, and
    McNemar's exact test: mcnemar_b = #(a right, b wrong), mcnemar_c = #(a wrong, b right),
    mcnemar_p = two-sided binomial test P-value of mcnemar_b successes in
    mcnemar_b + mcnemar_c trials at 1/2 (``scipy.stats.binomtest``), i.e.
    min(1, 2 sum_{k <= min(b, c)} C(b+c, k) / 2^(b+c)); 1.0 when b + c = 0.
    """
    def prepared(labels: pd.DataFrame, name: str) -> pd.DataFrame:
        if labels["id"].duplicated().any():
            raise ValueError(f"labels table {name} has duplicate ids")
        return pd.DataFrame({"id": labels["id"].to_numpy(), "p": numeric(labels, "p"),
                             "ai": ai_choices(labels, tie_band), "human": numeric(labels, "human_choice")})

    both = prepared(a, "a").merge(prepared(b, "b"), on="id", suffixes=("_a", "_b"))
    both = both[np.isfinite(both["p_a"]) & np.isfinite(both["p_b"])]
    conflict = both["human_a"].notna() & both["human_b"].notna() & (both["human_a"] != both["human_b"])
    if conflict.any():
        raise ValueError(f"human_choice differs between the tables for id {both.loc[conflict, 'id'].iloc[0]!r}")
    ai_a, ai_b = both["ai_a"].to_numpy(), both["ai_b"].to_numpy()
    human = both["human_a"].fillna(both["human_b"]).to_numpy()
    in_both = scored_mask(both[["p_a", "p_b"]].to_numpy(), human)
    right_a, right_b = ai_a[in_both] == human[in_both], ai_b[in_both] == human[in_both]
    count_b = int(np.sum(right_a & ~right_b))
    count_c = int(np.sum(~right_a & right_b))
    p_value = float(stats.binomtest(count_b, count_b + count_c, 0.5).pvalue) if count_b + count_c else 1.0
    return {
        "common_pairs": int(len(both)),
        "agreement": mean_or_nan((ai_a == ai_b).astype(np.float64)),
        "kappa": cohens_kappa(ai_a.astype(int), ai_b.astype(int)) if len(both) else math.nan,
        "alignment_a": mean_or_nan(right_a.astype(np.float64)),
        "alignment_b": mean_or_nan(right_b.astype(np.float64)),
        "mcnemar_b": count_b,
        "mcnemar_c": count_c,
        "mcnemar_p": min(1.0, p_value),
    }
