"""Confidence intervals: the bootstrap of a mean (pairs, or whole clusters of pairs) and a binomial win rate.

Shared by agreement (``alignment_ci``), the experiments' paired comparisons and the policy
comparisons. Like every analysis function (conventions in ``rlaif.analysis.agreement``),
these return NaN, never raise, when there is nothing to compute on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


def mean_or_nan(x: np.ndarray) -> float:
    """mean(x), NaN for an empty x."""
    return float(np.mean(x)) if len(x) else math.nan


def bootstrap_mean_ci(x: np.ndarray, confidence: float, n_resamples: int, seed: int,
                      method: str, clusters: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of x by scipy.stats.bootstrap; degenerate inputs handled.

    With ``clusters`` (one key per entry of x), whole clusters are resampled and the
    statistic is sum(x) / count over the drawn clusters: rows that share a cluster (pairs
    of one instruction) are not independent, and resampling them one by one would make
    the interval too narrow.
    """
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
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


def mean_ci(x: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
            clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Mean of x with the bootstrap interval ``alignment_ci`` uses (whole ``clusters`` resampled when given),
    for agreement rates that are not a labels table (e.g. one annotator against the others).
    Returns dict(mean, low, high, n)."""
    x = np.asarray(x, dtype=np.float64)
    mean, low, high = bootstrap_mean_ci(x, confidence, n_resamples, seed, "percentile", clusters)
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
    mean, low, high = bootstrap_mean_ci(a - b, confidence, n_resamples, seed, "percentile", clusters)
    return {"difference": mean, "low": low, "high": high, "n": int(len(a))}


def win_rate(wins: int, losses: int, ties: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """wins / (wins + losses) with a Wilson interval; ties are reported and left out of the rate.

    The form used for policy comparisons (a policy's sample against the baseline's) and for
    the reward-hacking probe (how often the degenerate answer wins).
    """
    decided = wins + losses
    interval = stats.binomtest(wins, decided).proportion_ci(confidence, method="wilson") if decided else None
    return {"wins": wins, "losses": losses, "ties": ties, "win_rate": wins / decided if decided else math.nan,
            "ci_low": interval.low if interval else math.nan, "ci_high": interval.high if interval else math.nan}
