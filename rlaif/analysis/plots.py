"""The report's figures (matplotlib, headless): each takes a labels table and returns a Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlaif.analysis import agreement, biases, calibration


def _figure(width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110, layout="constrained")
    return fig, ax


def reliability_diagram(labels: pd.DataFrame, bins: int = 10):
    """Observed share of pairs where people preferred response 1, per bin of the AI's p."""
    result = calibration.calibration(labels, bins=bins)
    table = result["table"]
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    shown = table[table["n"] > 0]
    ax.plot(shown["mean_p"], shown["frac_positive"], marker="o", color="C0", label="AI labeler")
    for row in shown.itertuples():
        ax.annotate(str(int(row.n)), (row.mean_p, row.frac_positive), textcoords="offset points", xytext=(4, -10),
                    fontsize=7, color="C0")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("AI P(response 1 preferred), bin mean")
    ax.set_ylabel("share where people preferred response 1")
    ax.set_title(f"Reliability (ECE {result['ece']:.3f}, Brier {result['brier']:.3f}, n={result['n']})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def alignment_by_group(labels: pd.DataFrame, by: str = "task"):
    """Alignment with its bootstrap 95% interval per group, and overall."""
    groups = agreement.alignment_by_group(labels, by=by)
    overall = agreement.alignment_ci(labels)
    names = [str(name) for name in groups.index] + ["all"]
    values = np.append(groups["alignment"].to_numpy(dtype=float), overall["alignment"])
    lows = np.append(groups["low"].to_numpy(dtype=float), overall["low"])
    highs = np.append(groups["high"].to_numpy(dtype=float), overall["high"])
    counts = list(groups["n"]) + [overall["n"]]
    fig, ax = _figure(width=max(4.0, 1.0 + 0.6 * len(names)))
    x = np.arange(len(names))
    ax.errorbar(x, values, yerr=[np.nan_to_num(values - lows), np.nan_to_num(highs - values)], fmt="o",
                capsize=4, color="C0")
    ax.axhline(0.5, linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xticks(x, [f"{name}\n(n={n})" for name, n in zip(names, counts)], fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("alignment with human labels")
    ax.set_title(f"Alignment per {by}, 95% bootstrap interval", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def position_bias_bars(labels: pd.DataFrame):
    """How often the labeler chose by position: same position in both orders, first vs second."""
    bias = biases.position_bias(labels)
    fig, ax = _figure(width=4.2)
    parts = {"first\nboth times": bias["same_first"], "second\nboth times": bias["same_second"],
             "followed\ncontent": 1 - bias["same_position"]}
    ax.bar(list(parts), list(parts.values()), color=["C3", "C1", "C2"])
    for i, value in enumerate(parts.values()):
        ax.text(i, value + 0.02, f"{value:.0%}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share of pairs")
    ax.set_title(f"Position preference over both orders (n={bias['n']})", fontsize=9)
    return fig


def length_bias_plot(labels: pd.DataFrame):
    """Share preferring the longer response, AI vs people, and alignment, per length-ratio bin."""
    bias = biases.length_bias(labels)
    table = bias["table"]
    fig, ax = _figure(width=5.2)
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["ai_prefers_longer"], width=0.4, label="AI prefers longer", color="C0")
    ax.bar(x + 0.2, table["human_prefers_longer"], width=0.4, label="people prefer longer", color="C1")
    ax.plot(x, table["alignment"], marker="o", color="black", label="alignment")
    ax.set_xticks(x, [f"{name}\n(n={n})" for name, n in zip(table.index.astype(str), table["n"])], fontsize=7)
    ax.set_xlabel("length of response 1 / length of response 2")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Length bias: AI {bias['ai_prefers_longer']:.0%} vs people {bias['human_prefers_longer']:.0%} "
                 f"prefer the longer (n={bias['n']})", fontsize=9)
    ax.legend(fontsize=7)
    return fig
