"""Getting the most out of a small labeler: label-prior corrections, the pointwise link, ensembles, abstention.

A small model's swap-averaged label is often the tiny difference between two
near-identical numbers, because most of what it says is a prior over label
positions. Each function here removes or works around that prior, and each is
fitted only on the arrays it is given: callers pass the fitting part and apply
the result to the evaluation part.

- Contextual calibration (Zhao et al. 2021): the labeler's label distribution on
  content-free inputs (both responses "N/A") is its prior; divide it out of
  every prompt's distribution and renormalize, before swap averaging.
- PriDe (Zheng et al. 2023): the prior over positions is estimated from a small
  sample labeled in both orders (averaging log-probs over the orders cancels the
  content), then divided out of the remaining pairs labeled in ONE order only.
- Pointwise link: P(response 1 preferred) = sigmoid(a (s1 - s2)) from the two
  expected 1-10 scores, the slope fitted on human labels; no position to prefer.
- Ensembles: the mean of members' soft labels, or a logistic stack of their logits
  fitted on human labels.
- Abstention: keep only pairs with |p - 0.5| > t; alignment against coverage.

All probabilities here mean "response 1 preferred" unless named per position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special

from rlaif.labels_table import scored_mask
from rlaif.soft_labels import candidate_probs, choice, swap_average_probs

#: Probabilities are clipped to [EPS, 1 - EPS] before logs and logits.
EPS = 1e-6


def label_prior(logprobs: np.ndarray) -> np.ndarray:
    """The mean candidate-label distribution over prompts whose content says nothing ([n, k] log-probs -> [k])."""
    probs = candidate_probs(logprobs)
    probs = probs[np.all(np.isfinite(probs), axis=1)]
    if not len(probs):
        raise ValueError("no finite label distribution to estimate a prior from")
    return probs.mean(axis=0)


def divide_prior(logprobs: np.ndarray, prior: Sequence[float]) -> np.ndarray:
    """Each row's candidate distribution divided by ``prior`` and renormalized: [n, k] probabilities.

    Zhao et al.'s W = diag(prior)^-1 with b = 0. A labeler whose every answer is its
    prior comes out uniform; one that adds content to the prior keeps the content.
    """
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or np.any(prior <= 0) or not np.all(np.isfinite(prior)):
        raise ValueError(f"a prior must be positive and finite, got {prior}")
    with np.errstate(invalid="ignore"):
        return candidate_probs(np.asarray(logprobs, dtype=np.float64) - np.log(prior))


def pride_prior(logprobs_first_order: np.ndarray, logprobs_swapped_order: np.ndarray) -> np.ndarray:
    """PriDe's prior over the two label positions, from a sample labeled in both orders ([n, 2] each -> [2]).

    Per pair, log prior(position j) = mean over the two orders of log P(label j), then a
    softmax: each response sits at each position once, so its content cancels. The
    estimate is the mean of the per-pair priors (Zheng et al. 2023, eq. 5-6).
    """
    first = np.log(np.clip(candidate_probs(logprobs_first_order), 1e-300, None))
    swapped = np.log(np.clip(candidate_probs(logprobs_swapped_order), 1e-300, None))
    per_pair = candidate_probs((first + swapped) / 2)
    per_pair = per_pair[np.all(np.isfinite(per_pair), axis=1)]
    if not len(per_pair):
        raise ValueError("no pair with finite log-probs in both orders to estimate a prior from")
    return per_pair.mean(axis=0)


def logprobs_column(labels: pd.DataFrame, column: str, candidates: int = 2) -> np.ndarray:
    """A labels table's per-row label log-probs as an [n, candidates] array; NaN rows where the
    labeler wrote none (skipped or failed rows)."""
    return np.array([row if isinstance(row, (list, np.ndarray)) else [np.nan] * candidates
                     for row in labels[column]], dtype=np.float64)


def apply_prior(labels: pd.DataFrame, prior: Sequence[float], asks_more_harmful: bool, method: str) -> pd.DataFrame:
    """A labels table (``rlaif.label_pairs`` rows) with ``prior`` divided out of both orders' label
    log-probs: p, the per-order p's and choices recomputed, the plain p kept as ``p_plain``, and
    ``debiasing`` = {method, prior} on every row, so the switch is recorded in the output and
    ``rlaif.summarize`` / ``analyze`` read the result like any labels table. Rows labeled in one
    order only (``orders`` 1) get the corrected first order as p."""
    out = labels.copy()
    first = logprobs_column(labels, "logprobs_first_order", len(prior))
    swapped = logprobs_column(labels, "logprobs_swapped_order", len(prior))
    soft = swap_average_probs(divide_prior(first, prior), divide_prior(swapped, prior), asks_more_harmful)
    one_order = (pd.to_numeric(labels["orders"], errors="coerce") == 1).to_numpy() if "orders" in labels \
        else np.zeros(len(labels), dtype=bool)
    soft["p"] = np.where(one_order, soft["p_first_order"], soft["p"])
    soft["ai_choice"] = choice(soft["p"])
    finite = np.isfinite(soft["p"])
    has = {"p_first_order": finite, "p_swapped_order": finite & ~one_order, "p": finite}
    out["p_plain"] = labels["p"]
    for column, ok in has.items():
        out[column] = np.where(ok, soft[column], np.nan)
    has.update(ai_choice=finite, position_first_order=finite, position_swapped_order=finite & ~one_order)
    for column in ("ai_choice", "position_first_order", "position_swapped_order"):  # None: no label (skipped row)
        out[column] = [int(c) if ok else None for c, ok in zip(soft[column], has[column])]
    out["debiasing"] = [{"method": method, "prior": [float(x) for x in prior]} for _ in range(len(out))]
    return out


def logit(p: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS))


def _human_targets(human_choice: Sequence[float], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the scored rows: finite ``values`` and a human choice of 1 or 2 (``labels_table.scored_mask``),
    y = [choice == 1] on those rows)."""
    human = pd.to_numeric(pd.Series(list(human_choice)), errors="coerce").to_numpy(dtype=np.float64)
    if len(human) != len(values):
        raise ValueError(f"{len(human)} human choices for {len(values)} rows")
    mask = scored_mask(values, human)
    return mask, (human[mask] == 1.0).astype(np.float64)


def fit_logistic_slope(x: Sequence[float], y: Sequence[float], bounds: tuple[float, float] = (-50.0, 50.0),
                       xatol: float = 1e-5) -> float:
    """Slope a of P(y = 1) = sigmoid(a x), by maximum likelihood on outcomes y (0/1); no intercept.

    a* = argmin_a -(1/N) sum_i [y_i log sigmoid(a x_i) + (1 - y_i) log sigmoid(-a x_i)], a in ``bounds``,
    by ``scipy.optimize.minimize_scalar`` (bounded, to ``xatol``; the loss is convex in a). Rows with a
    non-finite x or y are dropped; ValueError when none are left. The pointwise link (x = s1 - s2) and
    temperature scaling (x = logit(p), T = 1 / a: ``rlaif.analysis.calibration.fit_temperature``) are this fit.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if not len(x):
        raise ValueError("no finite (x, y) to fit a logistic slope on")
    sign = 2 * y - 1

    def loss(a: float) -> float:
        # -log sigmoid(s a x) = log(1 + exp(-s a x)), with s = +1 for y = 1 and -1 for y = 0
        return float(np.mean(np.logaddexp(0.0, -sign * (a * x))))

    return float(optimize.minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": xatol}).x)


def fit_score_link(score_difference: Sequence[float], human_choice: Sequence[float],
                   bounds: tuple[float, float] = (-50.0, 50.0)) -> float:
    """Slope a of P(response 1 preferred) = sigmoid(a (s1 - s2)), by maximum likelihood on human choices
    (``fit_logistic_slope``).

    No intercept: the data's response order is a coin flip, so neither slot should be
    favoured. a = 0 means the scores carry no usable signal (every p is 0.5). a < 0 means
    people prefer the response the labeler scores LOWER: the score measures something
    else (on HH-RLHF harmless a small model's 1-10 "harmlessness" rises with the reply's
    length and with how far it goes along with the request). Pass ``bounds=(0, 50)`` to
    refuse that inversion.
    """
    difference = np.asarray(score_difference, dtype=np.float64)
    mask, y = _human_targets(human_choice, difference)
    if not mask.any():
        raise ValueError("no finite score difference with a human choice of 1 or 2 to fit the link on")
    return fit_logistic_slope(difference[mask], y, bounds)


def score_link_p(score_difference: Sequence[float], slope: float) -> np.ndarray:
    return special.expit(slope * np.asarray(score_difference, dtype=np.float64))


def mean_ensemble(members: Sequence[np.ndarray]) -> np.ndarray:
    """Equal-weight mean of soft labels (the unfitted ensemble); NaN where any member is NaN."""
    return np.mean(np.vstack([np.asarray(m, dtype=np.float64) for m in members]), axis=0)


def fit_stack(members: Sequence[np.ndarray], human_choice: Sequence[float], l2: float = 1e-2) -> np.ndarray:
    """Weights w of p = sigmoid(sum_i w_i logit(p_i)), by L2-penalized log loss on human choices.

    The fitted ensemble: it learns how much each member's logit is worth (and so also
    rescales an under-confident member). No intercept, for the reason in ``fit_score_link``.
    """
    z = np.column_stack([np.where(np.isfinite(m), logit(m), np.nan) for m in members])
    mask, y = _human_targets(human_choice, z)
    z = z[mask]
    if not len(z):
        raise ValueError("no row with every member finite and a human choice of 1 or 2 to fit the stack on")

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        value = np.mean(np.logaddexp(0, -s) * y + np.logaddexp(0, s) * (1 - y)) + l2 * w @ w
        grad = z.T @ (special.expit(s) - y) / len(y) + 2 * l2 * w
        return float(value), grad

    start = np.full(z.shape[1], 1.0 / z.shape[1])
    return optimize.minimize(loss, start, jac=True, method="L-BFGS-B").x


def apply_stack(members: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The fitted ensemble's p (NaN where a member is NaN)."""
    z = np.column_stack([np.where(np.isfinite(m), logit(m), np.nan) for m in members])
    return special.expit(z @ np.asarray(weights, dtype=np.float64))


def abstention_curve(p: Sequence[float], human_choice: Sequence[float],
                     thresholds: Sequence[float] = tuple(np.round(np.arange(0, 0.5, 0.025), 3))) -> pd.DataFrame:
    """For each threshold t, the pairs with |p - 0.5| > t (t = 0 keeps every decided pair): coverage
    (share of scored pairs kept), alignment on those kept, and how many were kept."""
    p = np.asarray(p, dtype=np.float64)
    mask, y = _human_targets(human_choice, p)
    p = p[mask]
    rows = []
    for t in thresholds:
        kept = np.abs(p - 0.5) > t
        agree = (p[kept] > 0.5) == (y[kept] == 1)
        rows.append({"threshold": float(t), "kept": int(kept.sum()),
                     "coverage": float(kept.mean()) if len(p) else float("nan"),
                     "alignment": float(agree.mean()) if kept.any() else float("nan")})
    return pd.DataFrame(rows)
