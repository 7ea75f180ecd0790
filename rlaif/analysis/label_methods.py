"""Label-quality methods for a small labeler, fitted on one part of the human-labeled pairs, scored on the other.

A *method* turns the labeler's passes (its label log-probs under each prompt variant, its 1-10
scores, the responses' lengths) into P(response 1 preferred) for every pair: the plain
swap-averaged label, contextual calibration, PriDe, the pointwise link, ensembles, a length
control. Anything a method fits (a prior, a link slope, ensemble weights, an abstention
threshold) sees only the fitting part (``fit``, a boolean mask from ``split``); ``evaluate``
scores it on the rest. ``experiments/label_quality.py`` runs the passes and writes the table.
Human choices are float arrays (1, 2, 0 or NaN); scored rows as in ``rlaif.labels_table.scored_mask``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlaif import debiasing
from rlaif.analysis.agreement import ai_human_kappa, alignment_ci
from rlaif.analysis.biases import position_bias
from rlaif.analysis.calibration import calibration
from rlaif.analysis.intervals import paired_difference_ci
from rlaif.labels_table import scored_mask
from rlaif.pairs import PreferencePair
from rlaif.soft_labels import candidate_probs, choice, preferred_positions, swap_average_probs

#: The control row: sigmoid(a (log len1 - log len2)), a fitted. Never "best", never in an ensemble.
LENGTH_CONTROL = "length_control"


def split(n: int, fit_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the fitting part (seeded); the rest is the evaluation part."""
    order = np.random.default_rng(seed).permutation(n)
    fit = np.zeros(n, dtype=bool)
    fit[order[:int(round(fit_fraction * n))]] = True
    return fit


def content_free_pairs(pairs: list[PreferencePair], fit: np.ndarray, contexts: int, fillers: list[str],
                       seed: int) -> list[PreferencePair]:
    """Both responses replaced by a filler that says nothing ("N/A"), on contexts from the fitting part only."""
    chosen = np.random.default_rng(seed).permutation(np.flatnonzero(fit))[:contexts]
    return [PreferencePair(f"content-free:{pairs[i].id}:{k}", pairs[i].context, filler, filler)
            for i in sorted(chosen) for k, filler in enumerate(fillers)]


# --------------------------------------------------------------------------- passes (what the labeler ran)


@dataclass
class PairPass:
    """One pairwise prompt variant over all pairs, and over the content-free pairs."""

    logprobs_first: np.ndarray       # [n, 2]
    logprobs_swapped: np.ndarray     # [n, 2]
    content_free: np.ndarray         # [m, 2] (both orders of each content-free pair)
    seconds: float                   # labeling the n pairs
    asks_more_harmful: bool
    content_free_seconds: float = 0.0


@dataclass
class Passes:
    pairwise: dict[str, PairPass] = field(default_factory=dict)   # "plain", "words:letters", "preamble:detailed"
    scores: np.ndarray | None = None                              # [n, 2] expected 1-10 score of each response
    score_seconds: float = 0.0
    lengths: np.ndarray | None = None                             # [n, 2] characters in each response


# --------------------------------------------------------------------------- methods (fitted on the fitting part only)


@dataclass
class Method:
    p: np.ndarray                    # P(response 1 preferred), every pair
    p_first: np.ndarray              # per order (equal to p where a method has no order)
    p_swapped: np.ndarray
    cost: dict[str, tuple[float, float]]  # pass -> (prompts, seconds) per pair that the method uses of it
    fitted: dict = field(default_factory=dict)
    keep: np.ndarray | None = None   # abstention: the pairs it labels

    @property
    def prompts_per_pair(self) -> float:
        return sum(prompts for prompts, _ in self.cost.values())

    @property
    def seconds_per_pair(self) -> float:
        return sum(seconds for _, seconds in self.cost.values())


def _pairwise(probs_first: np.ndarray, probs_swapped: np.ndarray, harmful: bool, cost: dict,
              fitted: dict | None = None) -> Method:
    soft = swap_average_probs(probs_first, probs_swapped, harmful)
    return Method(soft["p"], soft["p_first_order"], soft["p_swapped_order"], cost, fitted or {})


def _union_cost(members: list[Method]) -> dict[str, tuple[float, float]]:
    """What an ensemble runs: each pass once, however many members read it."""
    cost: dict[str, tuple[float, float]] = {}
    for member in members:
        for name, price in member.cost.items():
            cost[name] = max(cost.get(name, price), price)
    return cost


def mean_of(members: list[Method]) -> Method:
    """The unfitted ensemble: the members' soft labels averaged, per order too."""
    return Method(debiasing.mean_ensemble([m.p for m in members]),
                  debiasing.mean_ensemble([m.p_first for m in members]),
                  debiasing.mean_ensemble([m.p_swapped for m in members]), _union_cost(members),
                  {"members": len(members)})


def stack_of(members: list[Method], human_fit: np.ndarray, fit: np.ndarray) -> Method:
    """The fitted ensemble: a logistic stack of the members' logits, weights fitted on the ``fit`` rows."""
    weights = debiasing.fit_stack([m.p[fit] for m in members], human_fit)

    def stacked(attr: str) -> np.ndarray:
        return debiasing.apply_stack([getattr(m, attr) for m in members], weights)

    return Method(stacked("p"), stacked("p_first"), stacked("p_swapped"), _union_cost(members),
                  {"weights": [round(float(w), 4) for w in weights]})


def methods(passes: Passes, human: np.ndarray, fit: np.ndarray, pride_sample: int, seed: int) -> dict[str, Method]:
    """Every method's labels for every pair. Human labels are read only at ``fit`` rows, and priors,
    link slopes and ensemble weights come from fitting rows only."""
    n = len(human)
    human_fit = human[fit]
    out: dict[str, Method] = {}
    calibrated: dict[str, Method] = {}
    for name, run in passes.pairwise.items():
        cost = {name: (2.0, run.seconds / n)}
        out[name] = _pairwise(candidate_probs(run.logprobs_first), candidate_probs(run.logprobs_swapped),
                              run.asks_more_harmful, cost)
        prior = debiasing.label_prior(run.content_free)
        # the content-free prompts are a one-off cost of the job, spread over its pairs
        with_free = {**cost, f"{name}:content_free": (len(run.content_free) / n, run.content_free_seconds / n)}
        calibrated[name] = out[f"{name}+cal"] = _pairwise(
            debiasing.divide_prior(run.logprobs_first, prior), debiasing.divide_prior(run.logprobs_swapped, prior),
            run.asks_more_harmful, with_free, {"content_free_prior": [round(float(x), 4) for x in prior]})

    plain = passes.pairwise["plain"]
    plain_cost = {"plain": (2.0, plain.seconds / n)}
    swap_prior = debiasing.pride_prior(plain.logprobs_first[fit], plain.logprobs_swapped[fit])
    out["calibrated_swap"] = _pairwise(debiasing.divide_prior(plain.logprobs_first, swap_prior),
                                       debiasing.divide_prior(plain.logprobs_swapped, swap_prior),
                                       plain.asks_more_harmful, plain_cost,
                                       {"swap_prior": [round(float(x), 4) for x in swap_prior]})
    sample = np.sort(np.random.default_rng(seed).permutation(np.flatnonzero(fit))[:pride_sample])
    prior = debiasing.pride_prior(plain.logprobs_first[sample], plain.logprobs_swapped[sample])
    both = _pairwise(debiasing.divide_prior(plain.logprobs_first, prior),
                     debiasing.divide_prior(plain.logprobs_swapped, prior), plain.asks_more_harmful, {})
    # Outside the sample a pair is labeled in the first order only: half the prompts. The per-order
    # numbers keep both orders corrected, so that position consistency says what the prior removal did.
    # The sample runs both orders, every other pair one: (n + sample) prompts instead of 2n.
    share = (n + len(sample)) / (2 * n)
    out["pride"] = Method(both.p_first, both.p_first, both.p_swapped, {"plain": (2 * share, plain.seconds / n * share)},
                          {"position_prior": [round(float(x), 4) for x in prior], "sample_pairs": len(sample),
                           "prompts_saved": round(1 - share, 4)})

    if passes.scores is not None:
        difference = passes.scores[:, 0] - passes.scores[:, 1]
        slope = debiasing.fit_score_link(difference[fit], human_fit)
        p = debiasing.score_link_p(difference, slope)
        out["pointwise"] = Method(p, p, p, {"pointwise": (2.0, passes.score_seconds / n)}, {"slope": round(slope, 4)})

    if passes.lengths is not None:  # a control, not a labeler: what the responses' lengths alone say
        difference = np.log1p(passes.lengths[:, 0]) - np.log1p(passes.lengths[:, 1])
        slope = debiasing.fit_score_link(difference[fit], human_fit)
        p = debiasing.score_link_p(difference, slope)
        out[LENGTH_CONTROL] = Method(p, p, p, {}, {"slope": round(slope, 4)})

    pointwise = [out["pointwise"]] if "pointwise" in out else []
    groups = {
        "words": [m for name, m in calibrated.items() if name == "plain" or name.startswith("words:")],
        "preambles": [m for name, m in calibrated.items() if name == "plain" or name.startswith("preamble:")],
        "methods": [out["plain+cal"], out["calibrated_swap"]] + pointwise,
        "techniques": [m for name, m in calibrated.items() if name == "plain" or name.startswith("technique:")],
        "all": list(calibrated.values()) + pointwise,
    }
    for group, members in groups.items():
        if len(members) > 1:
            out[f"ensemble:{group}"] = mean_of(members)
            out[f"ensemble:{group}:fitted"] = stack_of(members, human_fit, fit)
    return out


def cross_validated_alignment(passes: Passes, human: np.ndarray, fit: np.ndarray, pride_sample: int, seed: int,
                              folds: int = 5) -> dict[str, float]:
    """Each method's alignment on the fitting part, every fitting pair labeled by the method as fitted on
    the other folds: in-sample alignment favours whatever fits most (a stack of 8 members on 50 pairs)."""
    rows = np.random.default_rng(seed + 2).permutation(np.flatnonzero(fit))
    held_out: dict[str, np.ndarray] = {}
    for part in np.array_split(rows, folds):
        train = fit.copy()
        train[part] = False
        for name, method in methods(passes, np.where(train, human, np.nan), train, pride_sample, seed).items():
            held_out.setdefault(name, np.full(len(human), np.nan))[part] = method.p[part]
    return {name: alignment_of(p[fit], human[fit]) for name, p in held_out.items()}


def choose_best(candidates: dict[str, Method], fit_scores: dict[str, float], human: np.ndarray, fit: np.ndarray,
                min_coverage: float) -> dict[str, Method]:
    """"best": the highest ``fit_scores`` (cross-validated alignment on the fitting part), fewer prompts breaking
    ties; "best+abstain": it, keeping only pairs with |p - 0.5| above the threshold that maximizes
    fitting-part alignment at coverage >= min_coverage."""
    human_fit = human[fit]
    scores = {name: fit_scores.get(name, float("nan")) for name in candidates if name != LENGTH_CONTROL}
    name = max(scores, key=lambda k: (np.nan_to_num(scores[k], nan=-1), -candidates[k].prompts_per_pair))
    best = candidates[name]
    curve = debiasing.abstention_curve(best.p[fit], human_fit)
    curve = curve[(curve["coverage"] >= min_coverage) & curve["alignment"].notna()]
    threshold = float(curve.sort_values(["alignment", "coverage"], ascending=False)["threshold"].iloc[0]) \
        if len(curve) else 0.0
    chosen = Method(best.p, best.p_first, best.p_swapped, best.cost,
                    {**best.fitted, "chosen": name, "chosen_cv_alignment": round(scores[name], 4)})
    abstain = Method(best.p, best.p_first, best.p_swapped, best.cost, {"chosen": name, "threshold": threshold},
                     keep=np.abs(best.p - 0.5) > threshold)
    return {"best": chosen, "best+abstain": abstain}


# --------------------------------------------------------------------------- scores (evaluation part only)


def _agreement(p: np.ndarray, q: np.ndarray) -> float:
    ok = np.isfinite(p) & np.isfinite(q)
    return float(np.mean(choice(p[ok]) == choice(q[ok]))) if ok.any() else float("nan")


def _right(p: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Per row, whether the choice from p equals the human choice (an exact 0.5 is a tie: wrong)."""
    return choice(p) == human


def alignment_of(p: np.ndarray, human: np.ndarray) -> float:
    """Share of the scored rows (finite p, human choice 1 or 2) that p gets right."""
    ok = scored_mask(p, human)
    return float(np.mean(_right(p[ok], human[ok]))) if ok.any() else float("nan")


def method_labels(method: Method, human: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """The method's labels on ``rows`` as a labels table, the form ``rlaif.analysis`` reads."""
    first, swapped = method.p_first[rows], method.p_swapped[rows]
    positions = preferred_positions(first, swapped)
    # None where there is no label (a skipped row): never counted as a position preference
    return pd.DataFrame({
        "p": method.p[rows], "human_choice": human[rows], "p_first_order": first, "p_swapped_order": swapped,
        "position_first_order": [int(x) if np.isfinite(p) else None for x, p in zip(positions[0], first)],
        "position_swapped_order": [int(x) if np.isfinite(p) else None for x, p in zip(positions[1], swapped)],
    })


def evaluate(method: Method, human: np.ndarray, fit: np.ndarray, plain: Method) -> dict:
    """The table's numbers on the evaluation part; ``gain_vs_plain``: its alignment minus the plain
    labeler's on the same (kept) pairs, with a paired bootstrap interval (a gain is shown when
    ``gain_low`` > 0); ``agrees_with_swap``: share of its decided pairs where the method picks what the
    plain swap-averaged labeler picks (PriDe's check)."""
    rows = ~fit
    kept_all = np.ones(len(fit), dtype=bool) if method.keep is None else method.keep
    kept = rows & kept_all
    labels = method_labels(method, human, kept)
    ci = alignment_ci(labels)
    bias = position_bias(labels)
    scored_eval = scored_mask(method.p[rows], human[rows])
    both = kept & scored_mask(np.column_stack([method.p, plain.p]), human)
    gain = paired_difference_ci(_right(method.p[both], human[both]), _right(plain.p[both], human[both]))
    return {"eval_pairs": int(scored_eval.sum()), "alignment": ci["alignment"], "ci_low": ci["low"],
            "ci_high": ci["high"], "gain_vs_plain": gain["difference"], "gain_low": gain["low"],
            "gain_high": gain["high"], "kappa": ai_human_kappa(labels), "ece": calibration(labels)["ece"],
            "position_consistency": 1 - bias["same_position"],
            "coverage": ci["n"] / scored_eval.sum() if scored_eval.sum() else float("nan"),
            "agrees_with_swap": _agreement(method.p[kept], plain.p[kept]),
            "prompts_per_pair": method.prompts_per_pair, "seconds_per_pair": round(method.seconds_per_pair, 3),
            "fit_alignment": alignment_of(method.p[fit & kept_all], human[fit & kept_all]),
            "fitted": json.dumps(method.fitted) if method.fitted else ""}
