"""How well the AI labels agree with human labels, and how much they lean on position."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from rlaif.analysis import agreement, biases, calibration
from rlaif.labels_table import scored
from rlaif.pairs import TIE


def summarize(labels: pd.DataFrame) -> dict[str, Any]:
    """The report's numbers, from a labels table (one row per pair).

    alignment: share of pairs whose averaged AI choice equals the human choice,
    over pairs with a human label that is not a tie and a valid AI label (human
    ties, unlabeled, skipped and non-finite pairs are counted, not scored; an
    exact AI tie counts as a disagreement).
    position_bias: share of validly labeled pairs where the labeler preferred the
    same position in both orders, split into first and second position.
    """
    n = len(labels)
    human = labels["human_choice"] if "human_choice" in labels else pd.Series([None] * n, dtype=object)
    valid = labels["p"].notna() if n else pd.Series([], dtype=bool)
    labeled = human.notna()
    human_ties = labeled & (human == TIE)
    rows = labels[valid]
    m = len(rows)
    bias = biases.position_bias(labels)
    flags = labels["flags"] if "flags" in labels else pd.Series([[]] * n, dtype=object)
    flag_counts = pd.Series([flag for row in flags for flag in (row or [])], dtype=object).value_counts()
    return {
        "pairs": n,
        "pairs_labeled": m,
        "pairs_with_human_label": int(labeled.sum()),
        "human_ties": int(human_ties.sum()),
        "pairs_scored": len(scored(labels)),
        "alignment": agreement.alignment(labels),
        "position_bias": {
            "same_position_both_orders": bias["same_position"],
            "pairs_both_orders": bias["n"],  # fewer than pairs_labeled after PriDe: one order on the rest
            "same_first": bias["same_first"],
            "same_second": bias["same_second"],
        },
        "mean_p_shown_first": float(((rows["p_first_order"] + 1 - rows["p_swapped_order"]) / 2).mean())
        if m else math.nan,
        "mean_candidate_mass": float(rows["candidate_mass"].mean()) if m else math.nan,
        "ai_ties": int((rows["ai_choice"] == TIE).sum()),
        "flags": {str(flag): int(count) for flag, count in flag_counts.items()},
        "models": sorted(labels["model"].unique().tolist()) if "model" in labels else [],
        "templates": sorted(labels["template"].unique().tolist()) if "template" in labels else [],
    }


def json_safe(value: Any) -> Any:
    """NaN (e.g. the alignment of a set with no scored pairs) becomes None, so JSON stays valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def analyze(labels: pd.DataFrame, *, by: str = "task", bins: int = 10, tie_band: float = 0.0,
            n_resamples: int = 2000, temperature_scaling: bool = False) -> dict[str, Any]:
    """``summarize`` plus what a careful reviewer asks for (see rlaif.analysis for each formula):
    alignment with a bootstrap interval and per group, Cohen's kappa, ties, calibration, accuracy
    of confident pairs, position and length bias, and human-human agreement where annotators exist."""
    result = summarize(labels)
    if tie_band:
        result["alignment"] = agreement.alignment(labels, tie_band=tie_band)
    result["tie_band"] = tie_band
    result["alignment_ci"] = agreement.alignment_ci(labels, tie_band=tie_band, n_resamples=n_resamples)
    result["kappa"] = agreement.ai_human_kappa(labels, tie_band=tie_band)
    result["ties"] = agreement.tie_counts(labels, tie_band=tie_band)
    calibrated = calibration.calibration(labels, bins=bins)
    result["calibration"] = {key: calibrated[key] for key in ("ece", "brier", "log_loss", "n")}
    confident = calibration.accuracy_by_confidence(labels, tie_band=tie_band)
    result["accuracy_by_confidence"] = confident.to_dict(orient="records")
    bias = biases.position_bias(labels)
    result["position_bias"].update({k: bias[k] for k in ("mean_p_shown_first_first_order",
                                                          "mean_p_shown_first_swapped_order")})
    if {"length_1", "length_2"} <= set(labels.columns):
        length = biases.length_bias(labels, tie_band=tie_band)
        result["length_bias"] = {k: length[k] for k in ("ai_prefers_longer", "human_prefers_longer", "n")}
    if by in labels.columns:
        groups = agreement.alignment_by_group(labels, by=by, tie_band=tie_band, n_resamples=n_resamples)
        result["by_" + by] = {str(name): row for name, row in groups.to_dict(orient="index").items()}
    if temperature_scaling:
        result["temperature_scaling"] = calibration.temperature_scaling(labels, bins=bins)
    humans = agreement.human_agreement(labels)
    if humans["pairs"]:
        result["human_agreement"] = {**humans,
                                     "ai_vs_annotators": agreement.ai_vs_annotators(labels, tie_band=tie_band)}
    return result


def _num(x: float) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"


def format_report(summary: dict[str, Any]) -> str:
    """A short plain-text table of ``summarize``'s numbers."""
    bias = summary["position_bias"]
    lines = [
        f"model(s)                 {', '.join(summary['models']) or 'n/a'}",
        f"template(s)              {', '.join(summary['templates']) or 'n/a'}",
        f"pairs                    {summary['pairs']}",
        f"  labeled                {summary['pairs_labeled']}",
        f"  with a human label     {summary['pairs_with_human_label']}",
        f"  human ties (excluded)  {summary['human_ties']}",
        f"  scored                 {summary['pairs_scored']}",
        f"alignment with humans    {_pct(summary['alignment'])}",
        f"same position both orders {_pct(bias['same_position_both_orders'])} "
        f"(first {_pct(bias['same_first'])}, second {_pct(bias['same_second'])})"
        + (f" over the {bias['pairs_both_orders']} pairs labeled in both orders"
           if bias.get("pairs_both_orders", summary["pairs_labeled"]) < summary["pairs_labeled"] else ""),
        f"mean P(shown first)      {_num(summary['mean_p_shown_first'])}",
        f"mean candidate mass      {_num(summary['mean_candidate_mass'])}",
        f"AI ties (p = 0.5)        {summary['ai_ties']}",
        f"flags                    {', '.join(f'{k} {v}' for k, v in summary['flags'].items()) or 'none'}",
    ]
    if "alignment_ci" in summary:
        ci, cal = summary["alignment_ci"], summary["calibration"]
        at = next(i for i, line in enumerate(lines) if line.startswith("alignment with humans"))
        if ci["n"] >= 2 and ci["low"] == ci["high"]:
            # every pair agrees (or none does): the bootstrap has no spread; say what n pairs allow
            from scipy.stats import binomtest

            exact = binomtest(round(ci["alignment"] * ci["n"]), ci["n"]).proportion_ci(0.95)
            lines[at] += (f"  (every scored pair the same, so no bootstrap spread; exact binomial 95% CI "
                          f"{_pct(exact.low)} - {_pct(exact.high)}, n={ci['n']})")
        else:
            lines[at] += f"  (95% CI {_pct(ci['low'])} - {_pct(ci['high'])}, n={ci['n']})"
        lines += [
            f"Cohen's kappa vs humans  {_num(summary['kappa'])}",
            f"calibration              ECE {_num(cal['ece'])}, Brier {_num(cal['brier'])}, "
            f"log loss {_num(cal['log_loss'])}",
            f"  by order               first order {_num(summary['position_bias']['mean_p_shown_first_first_order'])}, "
            f"swapped order {_num(summary['position_bias']['mean_p_shown_first_swapped_order'])}",
        ]
        if "temperature_scaling" in summary:
            scaling = summary["temperature_scaling"]
            lines.append(f"temperature scaling      T = {_num(scaling['temperature'])} fitted on half; on the other "
                         f"half ECE {_num(scaling['before']['ece'])} -> {_num(scaling['after']['ece'])}, log loss "
                         f"{_num(scaling['before']['log_loss'])} -> {_num(scaling['after']['log_loss'])}")
        if "length_bias" in summary:
            length = summary["length_bias"]
            lines.append(f"prefers longer response  AI {_pct(length['ai_prefers_longer'])}, "
                         f"people {_pct(length['human_prefers_longer'])} (n={length['n']})")
        if "human_agreement" in summary:
            humans = summary["human_agreement"]
            lines.append(f"human-human agreement    {_pct(humans['mean_pairwise_agreement'])} "
                         f"(Fleiss kappa {_num(humans['fleiss_kappa'])}); AI vs each annotator "
                         f"{_pct(humans['ai_vs_annotators'])}")
            lines.append(f"annotator vs the others' majority {_pct(humans['annotator_vs_majority'])} "
                         f"(n={humans['annotator_vs_majority_n']}), beside the AI's alignment above")
        lines.append("accuracy by confidence   " + "; ".join(
            f">= {row['low']:.1f}: {_pct(row['accuracy_if_kept'])} of {_pct(row['kept_share'])} kept"
            for row in summary["accuracy_by_confidence"]))
        for key in (k for k in summary if k.startswith("by_")):
            for name, row in summary[key].items():
                lines.append(f"  {key[3:]} {name:20s} {_pct(row['alignment'])} "
                             f"[{_pct(row['low'])} - {_pct(row['high'])}] n={row['n']}")
    return "\n".join(lines)


def markdown_table(table: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A table as GitHub Markdown (floats formatted), for experiment outputs and READMEs."""
    columns = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(float_format.format(v) if isinstance(v, float) else str(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, stem: Path) -> None:
    """``stem``.csv, .json and .md of one results table."""
    table.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".json").write_text(json.dumps(json_safe(table.to_dict(orient="records")), indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown_table(table))
