"""Calibration: how well p works as a probability that people prefer response 1, and temperature scaling.

Scored rows and the other conventions: see ``rlaif.analysis.agreement``. The temperature
fit is ``rlaif.debiasing.fit_logistic_slope`` on logit(p): T = 1 / slope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from rlaif.debiasing import fit_logistic_slope
from rlaif.labels_table import scored

#: Forecasts are clipped to [EPS, 1 - EPS] before taking logs or logits.
EPS = 1e-12


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
        return {"ece": math.nan, "brier": math.nan, "log_loss": math.nan, "n": 0, "table": table}
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


def fit_temperature(p: Sequence[float], y: Sequence[float], bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimizing the log loss of sigmoid(logit(p) / T) for outcomes y (0/1).

    T* = argmin_T -(1/N) sum_i [y_i log q_i + (1 - y_i) log(1 - q_i)],
    q_i = sigmoid(logit(clip(p_i, 1e-12, 1 - 1e-12)) / T), T in ``bounds``;
    T* = 1 / a* with a* = ``rlaif.debiasing.fit_logistic_slope`` of the logits (the loss
    is convex in a = 1/T). T > 1 softens overconfident forecasts, T < 1 sharpens
    underconfident ones. Pairs with a non-finite p or y are dropped; NaN when none
    are left. When the data cannot pin T down (e.g. every forecast on the right
    side) the result sits at a bound.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(p) & np.isfinite(y)
    p, y = p[keep], y[keep]
    if len(p) == 0:
        return math.nan
    z = special.logit(np.clip(p, EPS, 1 - EPS))
    # xatol on a = 1/T: 1e-8 keeps T to about 1e-6 relative across the bounds, as the fit over log T did
    return 1.0 / fit_logistic_slope(z, y, bounds=(1.0 / bounds[1], 1.0 / bounds[0]), xatol=1e-8)


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
    empty = {"ece": math.nan, "brier": math.nan, "log_loss": math.nan}
    if len(held) == 0 or len(fit) == 0:
        return {"temperature": math.nan, "before": dict(empty), "after": dict(empty)}
    temperature = fit_temperature(p[fit], y[fit])

    def summary(forecast: np.ndarray) -> dict[str, float]:
        numbers = _calibration_arrays(forecast, y[held], bins)
        return {key: numbers[key] for key in ("ece", "brier", "log_loss")}

    return {"temperature": temperature, "before": summary(p[held]),
            "after": summary(apply_temperature(p[held], temperature))}
