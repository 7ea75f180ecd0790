"""Metrics on labels tables: agreement with people, intervals, calibration, biases.

A labels table has one row per pair (see ``rlaif.labeler``): ``p`` is the
swap-averaged P(response 1 preferred) (missing for skipped or failed rows),
``ai_choice`` is 1, 2 or ``TIE`` (0), ``human_choice`` is 1, 2, ``TIE`` or missing.
Tables read back from JSON may hold None/NaN and floats (1.0) in these columns;
every function here reads them through the same coercion, so both forms work.

Conventions shared by all functions:

* A row is *valid* when ``p`` is a finite number.
* A row is *scored* when it is valid and ``human_choice`` is 1 or 2 (human ties
  and unlabeled rows are counted, never scored).
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
from scipy import optimize, special, stats

from rlaif.pairs import TIE
from rlaif.soft_labels import choice

#: Forecasts are clipped to [EPS, 1 - EPS] before taking logs or logits.
EPS = 1e-12
_NAN = math.nan


# --------------------------------------------------------------------------- helpers


def _numeric(labels: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 (None, strings that are not numbers -> NaN); all-NaN if the column is absent."""
    if column not in labels:
        return np.full(len(labels), np.nan)
    return pd.to_numeric(labels[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _check_tie_band(tie_band: float) -> None:
    if not 0.0 <= tie_band <= 0.5:
        raise ValueError(f"tie_band must be in [0, 0.5], got {tie_band!r}")


def _ai_choices(labels: pd.DataFrame, tie_band: float = 0.0) -> np.ndarray:
    """ai_choice per row as floats (1, 2, 0; NaN where p is not valid).

    The table's ``ai_choice`` is used where present; where it is missing but p is
    valid it is derived from p (``soft_labels.choice``). Then the tie band applies.
    """
    _check_tie_band(tie_band)
    p = _numeric(labels, "p")
    valid = np.isfinite(p)
    ai = _numeric(labels, "ai_choice")
    derived = choice(np.where(valid, p, 0.5)).astype(np.float64)
    ai = np.where(np.isnan(ai), derived, ai)
    ai[~valid] = np.nan
    if tie_band > 0:
        ai[valid & (np.abs(p - 0.5) < tie_band)] = TIE
    return ai


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else _NAN


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


def scored(labels: pd.DataFrame, tie_band: float = 0.0) -> pd.DataFrame:
    """The scored rows: a valid p and a human choice of 1 or 2.

    Returns a copy of those rows (original index kept) with ``p`` as float,
    ``ai_choice`` and ``human_choice`` as int (``ai_choice`` after the tie band:
    0 where ``|p - 0.5| < tie_band``), and a bool column
    ``agree = (ai_choice == human_choice)``.
    """
    p = _numeric(labels, "p")
    human = _numeric(labels, "human_choice")
    ai = _ai_choices(labels, tie_band)
    mask = np.isfinite(p) & np.isin(human, (1.0, 2.0))
    out = labels.loc[mask].copy()
    out["p"] = p[mask]
    out["ai_choice"] = ai[mask].astype(int)
    out["human_choice"] = human[mask].astype(int)
    out["agree"] = out["ai_choice"].to_numpy() == out["human_choice"].to_numpy()
    return out


def alignment(labels: pd.DataFrame, tie_band: float = 0.0) -> float:
    """Share of scored pairs where the AI agrees with people.

    alignment = (1/N) * sum_i [ai_choice_i == human_choice_i] over the N scored
    rows (see ``scored``); an AI tie is a disagreement. NaN when N = 0.
    """
    return _mean(scored(labels, tie_band)["agree"].to_numpy(dtype=np.float64))


def _bootstrap_mean_ci(x: np.ndarray, confidence: float, n_resamples: int, seed: int,
                       method: str, clusters: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of x by scipy.stats.bootstrap; degenerate inputs handled.

    With ``clusters`` (one key per entry of x), whole clusters are resampled and the
    statistic is sum(x) / count over the drawn clusters: rows that share a cluster (pairs
    of one instruction) are not independent, and resampling them one by one would make
    the interval too narrow.
    """
    n = len(x)
    if n == 0:
        return _NAN, _NAN, _NAN
    mean = float(np.mean(x))
    if clusters is not None:
        if len(clusters) != n:
            raise ValueError(f"clusters must have one entry per row, got {len(clusters)} for {n}")
        codes = pd.factorize(pd.Series(list(clusters), dtype=object))[0]
        sums, counts = np.bincount(codes, weights=x), np.bincount(codes).astype(np.float64)
        if len(sums) < 2 or np.all(x == x[0]):
            return mean, mean, mean
        result = stats.bootstrap(
            (sums, counts), lambda s, c, axis: np.sum(s, axis=axis) / np.sum(c, axis=axis), vectorized=True,
            paired=True, n_resamples=n_resamples, confidence_level=confidence, method=method,
            batch=max(1, min(n_resamples, 4_000_000 // len(sums))), rng=np.random.default_rng(seed))
        interval = result.confidence_interval
        return mean, float(interval.low), float(interval.high)
    if n < 2 or np.all(x == x[0]):
        # Every resample has the same mean: the bootstrap interval collapses to the point.
        return mean, mean, mean
    result = stats.bootstrap(
        (x,), lambda sample, axis: np.mean(sample, axis=axis), vectorized=True,
        n_resamples=n_resamples, confidence_level=confidence, method=method,
        batch=max(1, min(n_resamples, 4_000_000 // n)), rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return mean, float(interval.low), float(interval.high)


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
    clusters are then resampled (see ``_bootstrap_mean_ci``).

    Returns dict(alignment, low, high, n).
    """
    if clusters is not None:
        if len(clusters) != len(labels):
            raise ValueError(f"clusters must have one entry per row of labels, got {len(clusters)} for {len(labels)}")
        labels = labels.assign(_cluster=list(clusters))
    rows = scored(labels, tie_band)
    agree = rows["agree"].to_numpy(dtype=np.float64)
    mean, low, high = _bootstrap_mean_ci(agree, confidence, n_resamples, seed, method,
                                         None if clusters is None else rows["_cluster"].tolist())
    return {"alignment": mean, "low": low, "high": high, "n": int(len(agree))}


def mean_ci(x: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
            clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Mean of x with the bootstrap interval ``alignment_ci`` uses (whole ``clusters`` resampled when given),
    for agreement rates that are not a labels table (e.g. one annotator against the others).
    Returns dict(mean, low, high, n)."""
    x = np.asarray(x, dtype=np.float64)
    mean, low, high = _bootstrap_mean_ci(x, confidence, n_resamples, seed, "percentile", clusters)
    return {"mean": mean, "low": low, "high": high, "n": int(len(x))}


def paired_difference_ci(right_a: Sequence[bool], right_b: Sequence[bool], confidence: float = 0.95,
                         n_resamples: int = 2000, seed: int = 0,
                         clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Alignment of labeler a minus labeler b on the same pairs, with a paired bootstrap interval.

    ``right_a[i]``, ``right_b[i]``: whether each agrees with people on pair i. The
    difference is the mean of d_i = right_a_i - right_b_i, and pairs are resampled
    together, so what both get right or both get wrong adds no noise: two labelers
    0.10 apart on 50 pairs can be told apart this way when their separate intervals
    overlap. Same bootstrap as ``alignment_ci`` (``clusters``: resample whole clusters).
    Returns dict(difference, low, high, n).
    """
    a, b = np.asarray(right_a, dtype=np.float64), np.asarray(right_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"right_a and right_b must have one entry per pair, got {a.shape} and {b.shape}")
    mean, low, high = _bootstrap_mean_ci(a - b, confidence, n_resamples, seed, "percentile", clusters)
    return {"difference": mean, "low": low, "high": high, "n": int(len(a))}


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
        return _NAN
    codes, _ = pd.factorize(pd.concat([a_s, b_s], ignore_index=True))
    ca, cb = codes[:n], codes[n:]
    k = int(codes.max()) + 1
    if k == 1:
        return _NAN
    p_o = float(np.mean(ca == cb))
    p_e = float(np.dot(np.bincount(ca, minlength=k), np.bincount(cb, minlength=k))) / n**2
    if p_e >= 1.0:
        return _NAN
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
        return _NAN
    n_i = counts.sum(axis=1)
    if np.any(n_i < 2):
        raise ValueError("every item needs at least 2 ratings")
    p_i = (np.sum(counts**2, axis=1) - n_i) / (n_i * (n_i - 1))
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float(np.sum(p_j**2))
    if p_e >= 1.0:
        return _NAN
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
        return {"pairs": 0, "mean_pairwise_agreement": _NAN, "fleiss_kappa": _NAN,
                "annotator_vs_majority": _NAN, "annotator_vs_majority_n": 0}
    categories = (1, 2, TIE)
    counts = np.array([[c.count(k) for k in categories] for c in lists], dtype=np.float64)
    m = counts.sum(axis=1)
    pairwise = (np.sum(counts * (counts - 1) / 2, axis=1)) / (m * (m - 1) / 2)
    against_majority = [case for choices in lists for case in annotator_vs_majority_cases(choices)]
    return {"pairs": len(lists), "mean_pairwise_agreement": float(np.mean(pairwise)),
            "fleiss_kappa": fleiss_kappa(counts),
            "annotator_vs_majority": _mean(np.asarray(against_majority, dtype=np.float64)),
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
    ai = _ai_choices(labels, tie_band)
    per_row = [np.mean(np.asarray(c) == ai[i])
               for i, c in enumerate(_human_choice_lists(labels)) if len(c) >= 2 and not np.isnan(ai[i])]
    return _mean(np.asarray(per_row, dtype=np.float64))


# --------------------------------------------------------------------------- counts


def tie_counts(labels: pd.DataFrame, tie_band: float = 0.0) -> dict[str, int]:
    """Counts over all rows.

    human_ties: human_choice == 0; unlabeled: human_choice missing;
    invalid: p missing or not finite (skipped / failed rows);
    ai_ties: valid rows whose ai_choice is 0 after the tie band (|p - 0.5| < tie_band, or exactly 0.5).
    """
    human = _numeric(labels, "human_choice")
    p = _numeric(labels, "p")
    ai = _ai_choices(labels, tie_band)
    return {"human_ties": int(np.sum(human == TIE)), "ai_ties": int(np.sum(ai == TIE)),
            "unlabeled": int(np.sum(np.isnan(human))), "invalid": int(np.sum(~np.isfinite(p)))}


# --------------------------------------------------------------------------- calibration


def _bin_index(x: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]: bin b holds b/bins <= x < (b+1)/bins; x == 1 goes in the last bin.

    x * bins is rounded to 9 decimals first, so a value that is an edge up to float
    error (2 * |0.6 - 0.5| = 0.19999999999999996) lands in the bin the edge opens.
    """
    return np.clip(np.floor(np.round(x * bins, 9)), 0, bins - 1).astype(int)


def _check_bins(bins: int) -> None:
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def _calibration_arrays(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """``calibration``'s numbers for plain arrays of forecasts p and outcomes y (0/1)."""
    _check_bins(bins)
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(p)
    index = _bin_index(p, bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / counts
        frac = np.bincount(index, weights=y, minlength=bins) / counts
    table = pd.DataFrame({"bin_low": np.arange(bins) / bins, "bin_high": np.arange(1, bins + 1) / bins,
                          "n": counts.astype(int), "mean_p": mean_p, "frac_positive": frac})
    if n == 0:
        return {"ece": _NAN, "brier": _NAN, "log_loss": _NAN, "n": 0, "table": table}
    filled = counts > 0
    ece = float(np.sum(counts[filled] / n * np.abs(frac[filled] - mean_p[filled])))
    clipped = np.clip(p, EPS, 1 - EPS)
    log_loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))
    return {"ece": ece, "brier": float(np.mean((p - y) ** 2)), "log_loss": log_loss, "n": int(n), "table": table}


def calibration(labels: pd.DataFrame, bins: int = 10) -> dict[str, Any]:
    """How well p works as a probability that people prefer response 1.

    Over the N scored rows, outcome y_i = [human_choice_i == 1], forecast p_i:
    brier = (1/N) sum_i (p_i - y_i)^2;
    log_loss = -(1/N) sum_i [y_i log q_i + (1 - y_i) log(1 - q_i)], q_i = clip(p_i, 1e-12, 1 - 1e-12);
    ece = sum_b (n_b / N) |frac_positive_b - mean_p_b| over non-empty bins b.
    Bins: ``bins`` equal-width bins of p over [0, 1], bin b = [b/bins, (b+1)/bins)
    (the last one includes 1). ``table``: one row per bin (empty bins included,
    their means NaN) with bin_low, bin_high, n, mean_p, frac_positive.
    N = 0: NaNs and a table of zero counts.

    Returns dict(ece, brier, log_loss, n, table).
    """
    rows = scored(labels)
    return _calibration_arrays(rows["p"].to_numpy(), (rows["human_choice"] == 1).to_numpy(dtype=np.float64), bins)


def accuracy_by_confidence(labels: pd.DataFrame, bins: int = 5, tie_band: float = 0.0) -> pd.DataFrame:
    """Alignment as a function of the labeler's confidence, and what keeping only confident pairs gives.

    Over the N scored rows, confidence c_i = 2 |p_i - 0.5| in [0, 1], put in
    ``bins`` equal-width bins [b/bins, (b+1)/bins) (the last includes 1).
    Per bin b: low, high, n_b, accuracy_b = mean of [ai_choice == human_choice]
    in the bin (NaN if empty); cumulative: kept_share_b = (sum_{b' >= b} n_b') / N
    (the pairs with c >= low_b) and accuracy_if_kept_b = alignment over those
    pairs (NaN if none).
    """
    _check_bins(bins)
    rows = scored(labels, tie_band)
    confidence = 2 * np.abs(rows["p"].to_numpy() - 0.5)
    agree = rows["agree"].to_numpy(dtype=np.float64)
    index = _bin_index(confidence, bins)
    n_b = np.bincount(index, minlength=bins)
    hits = np.bincount(index, weights=agree, minlength=bins)
    kept_n = np.cumsum(n_b[::-1])[::-1]
    kept_hits = np.cumsum(hits[::-1])[::-1]
    total = len(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "low": np.arange(bins) / bins, "high": np.arange(1, bins + 1) / bins, "n": n_b.astype(int),
            "accuracy": hits / n_b,
            "kept_share": kept_n / total if total else np.full(bins, np.nan),
            "accuracy_if_kept": kept_hits / kept_n,
        })


# --------------------------------------------------------------------------- temperature


def _temperature_loss(log_t: float, z: np.ndarray, sign: np.ndarray) -> float:
    # -log sigmoid(s * z / T) = log(1 + exp(-s z / T)), with s = +1 for y = 1 and -1 for y = 0
    return float(np.mean(np.logaddexp(0.0, -sign * z / math.exp(log_t))))


def fit_temperature(p: Sequence[float], y: Sequence[float], bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimizing the log loss of sigmoid(logit(p) / T) for outcomes y (0/1).

    T* = argmin_T -(1/N) sum_i [y_i log q_i + (1 - y_i) log(1 - q_i)],
    q_i = sigmoid(logit(clip(p_i, 1e-12, 1 - 1e-12)) / T), T in ``bounds``;
    found by ``scipy.optimize.minimize_scalar`` (bounded) over log T (the loss
    is convex in 1/T, so unimodal in log T). T > 1 softens overconfident
    forecasts, T < 1 sharpens underconfident ones. Pairs with a non-finite p
    or y are dropped; NaN when none are left. When the data cannot pin T down
    (e.g. every forecast on the right side) the result sits at a bound.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(p) & np.isfinite(y)
    p, y = p[keep], y[keep]
    if len(p) == 0:
        return _NAN
    z = special.logit(np.clip(p, EPS, 1 - EPS))
    sign = 2 * y - 1
    low, high = math.log(bounds[0]), math.log(bounds[1])
    result = optimize.minimize_scalar(_temperature_loss, bounds=(low, high), args=(z, sign), method="bounded",
                                      options={"xatol": 1e-6})
    return float(math.exp(result.x))


def apply_temperature(p: Sequence[float], temperature: float) -> np.ndarray:
    """sigmoid(logit(clip(p, 1e-12, 1 - 1e-12)) / T) elementwise (NaN stays NaN; T = 1 returns clipped p)."""
    p = np.asarray(p, dtype=np.float64)
    return special.expit(special.logit(np.clip(p, EPS, 1 - EPS)) / temperature)


def temperature_scaling(labels: pd.DataFrame, holdout_fraction: float = 0.5, seed: int = 0,
                        bins: int = 10) -> dict[str, Any]:
    """Fit a temperature on part of the scored rows; compare calibration on the rest.

    The N scored rows are shuffled with ``numpy.random.default_rng(seed)``;
    the first round(holdout_fraction * N) are the held-out (evaluation) part, the
    rest the fitting part. T = ``fit_temperature`` on the fitting part (y = [human_choice == 1]);
    ``before``/``after`` = ece, brier, log_loss (as in ``calibration``, ``bins`` bins)
    on the held-out part for p and for ``apply_temperature(p, T)``.
    Either part empty: all NaN.

    Returns dict(temperature, before, after).
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
    rows = scored(labels)
    p = rows["p"].to_numpy()
    y = (rows["human_choice"] == 1).to_numpy(dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(p))
    n_holdout = int(round(holdout_fraction * len(p)))
    held, fit = order[:n_holdout], order[n_holdout:]
    empty = {"ece": _NAN, "brier": _NAN, "log_loss": _NAN}
    if len(held) == 0 or len(fit) == 0:
        return {"temperature": _NAN, "before": dict(empty), "after": dict(empty)}
    temperature = fit_temperature(p[fit], y[fit])

    def summary(forecast: np.ndarray) -> dict[str, float]:
        numbers = _calibration_arrays(forecast, y[held], bins)
        return {key: numbers[key] for key in ("ece", "brier", "log_loss")}

    return {"temperature": temperature, "before": summary(p[held]),
            "after": summary(apply_temperature(p[held], temperature))}


# --------------------------------------------------------------------------- biases


def position_bias(labels: pd.DataFrame) -> dict[str, Any]:
    """How much the labeler prefers a position regardless of content.

    Over the n rows whose position_first_order and position_swapped_order are both 1 or 2:
    same_first = share with both == 1, same_second = share with both == 2,
    same_position = same_first + same_second (an unbiased, consistent labeler has 0);
    mean_p_shown_first_first_order = mean p_first_order (response 1 is shown first),
    mean_p_shown_first_swapped_order = mean (1 - p_swapped_order) (response 2 is shown first);
    both means over those rows with a finite value. NaN when n = 0.
    """
    first = _numeric(labels, "position_first_order")
    swapped = _numeric(labels, "position_swapped_order")
    ok = np.isin(first, (1.0, 2.0)) & np.isin(swapped, (1.0, 2.0))
    n = int(ok.sum())
    first, swapped = first[ok], swapped[ok]
    p_first = _numeric(labels, "p_first_order")[ok]
    shown_first_swapped = 1.0 - _numeric(labels, "p_swapped_order")[ok]
    same_first = _mean(((first == 1) & (swapped == 1)).astype(np.float64))
    same_second = _mean(((first == 2) & (swapped == 2)).astype(np.float64))
    return {
        "same_position": same_first + same_second if n else _NAN,
        "same_first": same_first,
        "same_second": same_second,
        "mean_p_shown_first_first_order": _mean(p_first[np.isfinite(p_first)]),
        "mean_p_shown_first_swapped_order": _mean(shown_first_swapped[np.isfinite(shown_first_swapped)]),
        "n": n,
    }


def _interval_label(low: float, high: float) -> str:
    return f"[{low:g}, {high:g})"


def length_bias(labels: pd.DataFrame, bins: Sequence[float] = (0, 0.8, 1.25, math.inf),
                tie_band: float = 0.0) -> dict[str, Any]:
    """Whether the AI and people prefer the longer response.

    Over the n scored rows with finite length_1 != length_2, longer_i = 1 if
    length_1 > length_2 else 2:
    ai_prefers_longer = mean [ai_choice == longer] (an AI tie counts as not preferring it),
    human_prefers_longer = mean [human_choice == longer].
    ``table``: rows grouped by ratio r = length_1 / length_2 into the intervals
    [bins[k], bins[k+1]) (the last interval also includes its upper edge, so r = inf
    lands in [1.25, inf)); per interval: low, high, n, alignment, ai_prefers_longer,
    human_prefers_longer (NaN where n = 0). Rows whose ratio falls outside the
    edges count in the totals only. No length columns or no such rows: n = 0 and NaNs.

    Returns dict(ai_prefers_longer, human_prefers_longer, n, table).
    """
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be increasing edges, got {bins!r}")
    rows = scored(labels, tie_band)
    len_1, len_2 = _numeric(rows, "length_1"), _numeric(rows, "length_2")
    ok = np.isfinite(len_1) & np.isfinite(len_2) & (len_1 != len_2)
    len_1, len_2 = len_1[ok], len_2[ok]
    ai = rows["ai_choice"].to_numpy()[ok]
    human = rows["human_choice"].to_numpy()[ok]
    longer = np.where(len_1 > len_2, 1, 2)
    ai_longer, human_longer = (ai == longer).astype(np.float64), (human == longer).astype(np.float64)
    agree = (ai == human).astype(np.float64)
    with np.errstate(divide="ignore"):
        ratio = np.where(len_2 > 0, len_1 / np.where(len_2 > 0, len_2, 1), np.inf)
    index = np.searchsorted(edges, ratio, side="right") - 1
    index[ratio == edges[-1]] = len(edges) - 2
    table = []
    for k in range(len(edges) - 1):
        in_bin = index == k
        table.append({"low": edges[k], "high": edges[k + 1], "n": int(in_bin.sum()),
                      "alignment": _mean(agree[in_bin]), "ai_prefers_longer": _mean(ai_longer[in_bin]),
                      "human_prefers_longer": _mean(human_longer[in_bin])})
    frame = pd.DataFrame(table, index=pd.Index([_interval_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])],
                                               name="length_ratio"))
    return {"ai_prefers_longer": _mean(ai_longer), "human_prefers_longer": _mean(human_longer),
            "n": int(ok.sum()), "table": frame}


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
        return pd.DataFrame({"id": labels["id"].to_numpy(), "p": _numeric(labels, "p"),
                             "ai": _ai_choices(labels, tie_band), "human": _numeric(labels, "human_choice")})

    both = prepared(a, "a").merge(prepared(b, "b"), on="id", suffixes=("_a", "_b"))
    both = both[np.isfinite(both["p_a"]) & np.isfinite(both["p_b"])]
    conflict = both["human_a"].notna() & both["human_b"].notna() & (both["human_a"] != both["human_b"])
    if conflict.any():
        raise ValueError(f"human_choice differs between the tables for id {both.loc[conflict, 'id'].iloc[0]!r}")
    ai_a, ai_b = both["ai_a"].to_numpy(), both["ai_b"].to_numpy()
    human = both["human_a"].fillna(both["human_b"]).to_numpy()
    in_both = np.isin(human, (1.0, 2.0))
    right_a, right_b = ai_a[in_both] == human[in_both], ai_b[in_both] == human[in_both]
    count_b = int(np.sum(right_a & ~right_b))
    count_c = int(np.sum(~right_a & right_b))
    p_value = float(stats.binomtest(count_b, count_b + count_c, 0.5).pvalue) if count_b + count_c else 1.0
    return {
        "common_pairs": int(len(both)),
        "agreement": _mean((ai_a == ai_b).astype(np.float64)),
        "kappa": cohens_kappa(ai_a.astype(int), ai_b.astype(int)) if len(both) else _NAN,
        "alignment_a": _mean(right_a.astype(np.float64)),
        "alignment_b": _mean(right_b.astype(np.float64)),
        "mcnemar_b": count_b,
        "mcnemar_c": count_c,
        "mcnemar_p": min(1.0, p_value),
    }


def win_rate(wins: int, losses: int, ties: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """wins / (wins + losses) with a Wilson interval; ties are reported and left out of the rate.

    The form used for policy comparisons (a policy's sample against the baseline's) and for
    the reward-hacking probe (how often the degenerate answer wins).
    """
    decided = wins + losses
    interval = stats.binomtest(wins, decided).proportion_ci(confidence, method="wilson") if decided else None
    return {"wins": wins, "losses": losses, "ties": ties, "win_rate": wins / decided if decided else float("nan"),
            "ci_low": interval.low if interval else float("nan"), "ci_high": interval.high if interval else float("nan")}
