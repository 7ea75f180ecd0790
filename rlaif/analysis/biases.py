"""Biases that have nothing to do with content: preferring a position, preferring the longer response.

Scored rows and the other conventions: see ``rlaif.analysis.agreement``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rlaif.analysis.intervals import mean_or_nan
from rlaif.labels_table import numeric, scored


def same_position(labels: pd.DataFrame) -> np.ndarray:
    """Per row: the labeler preferred the same position (1 or 2) in both orders, so it chose by
    position, not content (a "position flip": its choice of response flipped with the order).
    False where an order has no position (skipped, failed, one order asked)."""
    first = numeric(labels, "position_first_order")
    swapped = numeric(labels, "position_swapped_order")
    return np.isin(first, (1.0, 2.0)) & (first == swapped)


def position_bias(labels: pd.DataFrame) -> dict[str, Any]:
    """How much the labeler prefers a position regardless of content.

    Over the n rows whose position_first_order and position_swapped_order are both 1 or 2:
    same_first = share with both == 1, same_second = share with both == 2,
    same_position = same_first + same_second (an unbiased, consistent labeler has 0);
    mean_p_shown_first_first_order = mean p_first_order (response 1 is shown first),
    mean_p_shown_first_swapped_order = mean (1 - p_swapped_order) (response 2 is shown first);
    both means over those rows with a finite value. NaN when n = 0.
    """
    first = numeric(labels, "position_first_order")
    swapped = numeric(labels, "position_swapped_order")
    ok = np.isin(first, (1.0, 2.0)) & np.isin(swapped, (1.0, 2.0))
    n = int(ok.sum())
    first, swapped = first[ok], swapped[ok]
    p_first = numeric(labels, "p_first_order")[ok]
    shown_first_swapped = 1.0 - numeric(labels, "p_swapped_order")[ok]
    same_first = mean_or_nan(((first == 1) & (swapped == 1)).astype(np.float64))
    same_second = mean_or_nan(((first == 2) & (swapped == 2)).astype(np.float64))
    return {
        "same_position": mean_or_nan(same_position(labels)[ok].astype(np.float64)),
        "same_first": same_first,
        "same_second": same_second,
        "mean_p_shown_first_first_order": mean_or_nan(p_first[np.isfinite(p_first)]),
        "mean_p_shown_first_swapped_order": mean_or_nan(shown_first_swapped[np.isfinite(shown_first_swapped)]),
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
    len_1, len_2 = numeric(rows, "length_1"), numeric(rows, "length_2")
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
                      "alignment": mean_or_nan(agree[in_bin]), "ai_prefers_longer": mean_or_nan(ai_longer[in_bin]),
                      "human_prefers_longer": mean_or_nan(human_longer[in_bin])})
    frame = pd.DataFrame(table, index=pd.Index([_interval_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])],
                                               name="length_ratio"))
    return {"ai_prefers_longer": mean_or_nan(ai_longer), "human_prefers_longer": mean_or_nan(human_longer),
            "n": int(ok.sum()), "table": frame}
