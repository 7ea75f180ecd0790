"""Label quality from small labelers: debiasing, calibration, pointwise scoring and ensembles, on human labels.

    python experiments/label_quality.py                         # experiments/label_quality.yaml
    python experiments/label_quality.py --config my.yaml --limit 40
    python experiments/label_quality.py --models qwen2.5-coder-1.5b --datasets llmbar-natural

For each model and each human-labeled set: the pairs are split (seeded) into a
fitting part and an evaluation part that never share a pair. The labeler runs
"passes" over all pairs, resumably (RESULTS/raw/<model>/<dataset>/<pass>.jsonl):
the plain base prompt in both orders, each label-word variant and each extra
preamble in both orders, content-free prompts (both responses "N/A", ...) per
prompt variant on contexts from the fitting part, and the 1-10 scorer on each
response alone. Every method is then computed from those passes; anything it
fits (a prior, a link slope, ensemble weights, a threshold) sees only the
fitting part (``methods``), and every number in the table is on the evaluation
part:

- plain: base prompt, "1"/"2", swap-averaged (the reference);
- calibrated: contextual calibration (content-free prior divided out per order);
- calibrated_swap: the prior estimated from fitting pairs in both orders instead;
- pride: PriDe, the fitting sample's position prior divided out of ONE order;
- pointwise: sigmoid(a (s1 - s2)) from the two expected 1-10 scores, a fitted;
- words:<variant> (and +cal): other label words / endings;
- preamble:<name> (and +cal);
- technique:<name> (and +cal): the base prompt with rlaif.Prompting switches (few-shot, CoT, ...);
- ensembles (mean, and fitted logistic stack) over label words, preambles, techniques, methods, models;
- length_control: no labeler, sigmoid(a (log len1 - log len2)) with a fitted: what length alone says;
- best: the labeler method with the highest cross-validated alignment on the fitting part (5 folds, each
  method refitted without the fold it labels), and best+abstain,
  which keeps pairs with |p - 0.5| above a threshold chosen on the fitting part.

Writes RESULTS/table.csv/.json/.md (alignment with 95% interval, the gain over plain on the same
pairs with a paired 95% interval, kappa, ECE,
position consistency, coverage, prompts and seconds per pair), abstention.csv,
RESULTS/plots/*.png and config.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

import rlaif
from rlaif import debiasing, metrics
from rlaif.experiment_config import read_config
from rlaif.pairs import PreferencePair
from rlaif.label_store import read_journal
from rlaif.report import write_table
from rlaif.soft_labels import candidate_probs, choice, preferred_positions, swap_average_probs

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("label_shared_data", HERE / "label_shared_data.py")
label_shared_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(label_shared_data)
DATASETS = {name: (fmt, relative, task) for name, fmt, relative, task in label_shared_data.DATASETS}

CONFIG_KEYS = {"models", "datasets", "data_root", "skip", "limit", "fit_fraction", "seed", "chat_template", "content_free",
               "content_free_contexts", "pride_sample", "label_words", "preambles", "min_coverage", "batch_size",
               "max_batch_tokens", "dtype", "techniques", "results"}
DEFAULTS = {"data_root": "../shared/data", "skip": 0, "limit": 100, "fit_fraction": 0.5, "seed": 0, "chat_template": True,
            "content_free": ["N/A", "[MASK]", ""], "content_free_contexts": 4, "pride_sample": 16,
            "label_words": {}, "preambles": ["base"], "min_coverage": 0.5, "batch_size": 64,
            "max_batch_tokens": 4096, "dtype": "float32", "techniques": {}, "results": "results/label_quality"}
TABLE_COLUMNS = ["model", "dataset", "method", "eval_pairs", "alignment", "ci_low", "ci_high", "gain_vs_plain", "gain_low",
                 "gain_high", "kappa", "ece",
                 "position_consistency", "coverage", "agrees_with_swap", "prompts_per_pair", "seconds_per_pair", "fit_alignment", "fit_alignment_cv", "fitted"]


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "label_quality.yaml"))
    parser.add_argument("--limit", type=int, help="pairs per data set (fitting + evaluation)")
    parser.add_argument("--models", nargs="+", help="replace the config's models")
    parser.add_argument("--datasets", nargs="+", help="replace the config's data sets")
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = {**DEFAULTS, **read_config(args.config, CONFIG_KEYS)}
    for key in ("limit", "models", "datasets", "results"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    unknown = set(config["datasets"]) - set(DATASETS)
    if unknown:
        raise SystemExit(f"{args.config}: unknown datasets {sorted(unknown)}; known: {sorted(DATASETS)}")
    for name, words in config["label_words"].items():
        if not isinstance(words, dict) or set(words) - {"labels", "names", "ending"}:
            raise SystemExit(f"{args.config}: label_words.{name} must be a mapping of labels / names / ending")
    for name, settings in config["techniques"].items():
        try:
            rlaif.Prompting(**settings)
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{args.config}: techniques.{name}: {error}") from None
    return config


def split(n: int, fit_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the fitting part (seeded); the rest is the evaluation part."""
    order = np.random.default_rng(seed).permutation(n)
    fit = np.zeros(n, dtype=bool)
    fit[order[:int(round(fit_fraction * n))]] = True
    return fit


# --------------------------------------------------------------------------- passes (what the labeler runs)


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


def content_free_pairs(pairs: list[PreferencePair], fit: np.ndarray, contexts: int, fillers: list[str],
                       seed: int) -> list[PreferencePair]:
    """Both responses replaced by a filler that says nothing ("N/A"), on contexts from the fitting part only."""
    chosen = np.random.default_rng(seed).permutation(np.flatnonzero(fit))[:contexts]
    return [PreferencePair(f"content-free:{pairs[i].id}:{k}", pairs[i].context, filler, filler)
            for i in sorted(chosen) for k, filler in enumerate(fillers)]


def _rows_on_disk(out: Path) -> int:
    return len(read_journal(out, repair=False)) if out.exists() else 0


def timed_pass(out: Path, label: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    """Run one resumable pass into ``out``: its rows, and seconds per pair labeled. A resumed pass reads
    its rows from disk in no time, so the time and count of the pairs each run labeled are kept in
    ``out``.timing.json and add up across runs (NaN when no run here labeled any)."""
    timing_path = out.with_suffix(".timing.json")
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"seconds": 0.0, "pairs": 0}
    before = _rows_on_disk(out)
    started = time.time()
    rows = label()
    labeled = _rows_on_disk(out) - before
    if labeled:  # a run that only read finished rows back adds no time to the pairs' cost
        timing["seconds"] += time.time() - started
        timing["pairs"] += labeled
    timing_path.write_text(json.dumps(timing) + "\n")
    return rows, timing["seconds"] / timing["pairs"] if timing["pairs"] else float("nan")


def run_passes(pairs: list[PreferencePair], fit: np.ndarray, task: str, backend, config: dict, raw: Path) -> Passes:
    """Label every pass resumably into ``raw``; the content-free pairs come from the fitting part."""
    free = content_free_pairs(pairs, fit, config["content_free_contexts"], config["content_free"], config["seed"] + 1)
    base = rlaif.PromptTemplate(task)
    variants = {"plain": (base, None)}  # name -> (template, rlaif.Prompting or None: the plain labeler)
    for name, words in config["label_words"].items():
        variants[f"words:{name}"] = (rlaif.PromptTemplate(task, labels=words.get("labels"), names=words.get("names"),
                                                          ending=words.get("ending")), None)
    for preamble in config["preambles"]:
        if preamble != "base":
            variants[f"preamble:{preamble}"] = (rlaif.PromptTemplate(task, preamble), None)
    for name, settings in config["techniques"].items():
        variants[f"technique:{name}"] = (base, rlaif.Prompting(**settings))
    passes = Passes(lengths=np.array([[len(p.response_1), len(p.response_2)] for p in pairs], dtype=np.float64))
    raw.mkdir(parents=True, exist_ok=True)
    chat = config["chat_template"]
    for name, (template, prompting) in variants.items():
        stem = name.replace(":", "_")
        labels, seconds = timed_pass(raw / f"{stem}.jsonl", lambda: rlaif.label_pairs(
            pairs, backend, template, chat_template=chat, prompting=prompting, out=raw / f"{stem}.jsonl",
            progress=True))
        free_labels, free_seconds = timed_pass(raw / f"{stem}.content_free.jsonl", lambda: rlaif.label_pairs(
            free, backend, template, chat_template=chat, prompting=prompting,
            out=raw / f"{stem}.content_free.jsonl", progress=False))
        passes.pairwise[name] = PairPass(debiasing.logprobs_column(labels, "logprobs_first_order"),
                                         debiasing.logprobs_column(labels, "logprobs_swapped_order"),
                                         np.vstack([debiasing.logprobs_column(free_labels, "logprobs_first_order"),
                                                    debiasing.logprobs_column(free_labels, "logprobs_swapped_order")]),
                                         seconds * len(pairs), template.asks_more_harmful,
                                         free_seconds * len(free))
    scorer = rlaif.DirectScorer(backend, rlaif.PromptTemplate(task), chat_template=chat)
    scored, seconds = timed_pass(raw / "pointwise.jsonl",
                                 lambda: rlaif.score_pairs(pairs, scorer, out=raw / "pointwise.jsonl", progress=True))
    passes.score_seconds = seconds * len(pairs)
    passes.scores = scored[["score_1", "score_2"]].astype(float).to_numpy()
    return passes


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


def _mean_of(members: list[Method]) -> Method:
    return Method(debiasing.mean_ensemble([m.p for m in members]),
                  debiasing.mean_ensemble([m.p_first for m in members]),
                  debiasing.mean_ensemble([m.p_swapped for m in members]), _union_cost(members),
                  {"members": len(members)})


def _stack_of(members: list[Method], human_fit: np.ndarray, fit: np.ndarray) -> Method:
    weights = debiasing.fit_stack([m.p[fit] for m in members], human_fit)

    def stacked(attr: str) -> np.ndarray:
        return debiasing.apply_stack([getattr(m, attr) for m in members], weights)

    return Method(stacked("p"), stacked("p_first"), stacked("p_swapped"), _union_cost(members),
                  {"weights": [round(float(w), 4) for w in weights]})


#: The control row: sigmoid(a (log len1 - log len2)), a fitted. Never "best", never in an ensemble.
LENGTH_CONTROL = "length_control"


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
            out[f"ensemble:{group}"] = _mean_of(members)
            out[f"ensemble:{group}:fitted"] = _stack_of(members, human_fit, fit)
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
    return {name: _alignment(p[fit], human[fit]) for name, p in held_out.items()}


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


def _agreement(p: np.ndarray, q: np.ndarray) -> float:
    ok = np.isfinite(p) & np.isfinite(q)
    return float(np.mean(choice(p[ok]) == choice(q[ok]))) if ok.any() else float("nan")


def _right(p: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Per row, whether the choice from p equals the human choice (an exact 0.5 is a tie: wrong)."""
    return choice(p) == human


def _alignment(p: np.ndarray, human: np.ndarray) -> float:
    """Share of rows with a human choice of 1 or 2 that p gets right."""
    ok = np.isfinite(p) & np.isin(human, (1, 2))
    return float(np.mean(_right(p[ok], human[ok]))) if ok.any() else float("nan")


# --------------------------------------------------------------------------- metrics (evaluation part only)


def labels_table(method: Method, human: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """The method's labels on ``rows`` in the labels-table form ``rlaif.metrics`` reads."""
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
    labels = labels_table(method, human, kept)
    ci = metrics.alignment_ci(labels)
    bias = metrics.position_bias(labels)
    scored_eval = np.isin(human[rows], (1, 2)) & np.isfinite(method.p[rows])
    both = kept & np.isin(human, (1, 2)) & np.isfinite(method.p) & np.isfinite(plain.p)
    gain = metrics.paired_difference_ci(_right(method.p[both], human[both]), _right(plain.p[both], human[both]))
    return {"eval_pairs": int(scored_eval.sum()), "alignment": ci["alignment"], "ci_low": ci["low"],
            "ci_high": ci["high"], "gain_vs_plain": gain["difference"], "gain_low": gain["low"],
            "gain_high": gain["high"], "kappa": metrics.ai_human_kappa(labels), "ece": metrics.calibration(labels)["ece"],
            "position_consistency": 1 - bias["same_position"],
            "coverage": ci["n"] / scored_eval.sum() if scored_eval.sum() else float("nan"),
            "agrees_with_swap": _agreement(method.p[kept], plain.p[kept]),
            "prompts_per_pair": method.prompts_per_pair, "seconds_per_pair": round(method.seconds_per_pair, 3),
            "fit_alignment": _alignment(method.p[fit & kept_all], human[fit & kept_all]),
            "fitted": json.dumps(method.fitted) if method.fitted else ""}


# --------------------------------------------------------------------------- plots


def _file_name(model: str) -> str:
    """A model name (catalogue, hub "org/name" or a folder) as one path component."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in model)


def plot(table: pd.DataFrame, curves: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (model, dataset), part in table.groupby(["model", "dataset"], sort=False):
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(part) + 1.2))
        y = np.arange(len(part))
        ax.errorbar(part["alignment"], y, xerr=[part["alignment"] - part["ci_low"], part["ci_high"] - part["alignment"]],
                    fmt="o", capsize=3)
        if (part["method"] == "plain").any():
            ax.axvline(float(part.loc[part["method"] == "plain", "alignment"].iloc[0]), ls="--", c="gray")
        ax.axvline(0.5, ls=":", c="k")
        ax.set_yticks(y, part["method"])
        ax.invert_yaxis()
        ax.set_xlabel("alignment with human labels (evaluation part, 95% CI)")
        ax.set_title(f"{model} on {dataset}")
        fig.tight_layout()
        path = folder / f"alignment_{_file_name(model)}_{dataset}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if len(curves):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (model, dataset, method), part in curves.groupby(["model", "dataset", "method"], sort=False):
            ax.plot(part["coverage"], part["alignment"], marker=".", label=f"{model} {dataset} {method}")
        ax.set_xlabel("coverage (share of pairs kept)")
        ax.set_ylabel("alignment on kept pairs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "abstention.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------- the run


def main(argv=None, backends: dict | None = None) -> pd.DataFrame:
    """Run the configured experiment; ``backends`` (model name -> backend) replaces loading, for tests."""
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    data = {}
    for name in config["datasets"]:
        fmt, relative, task = DATASETS[name]
        # skip: pairs at the start of the file left out, e.g. those an earlier run already evaluated on
        pairs = list(rlaif.load_pairs(Path(config["data_root"]) / relative, fmt,
                                      limit=config["skip"] + config["limit"]))[config["skip"]:]
        fit = split(len(pairs), config["fit_fraction"], config["seed"])
        data[name] = (pairs, task, fit)
    (results / "config.json").write_text(json.dumps({
        **config, "rlaif_version": rlaif.__version__,
        "splits": {name: {"fit_ids": [p.id for p, f in zip(pairs, fit) if f],
                          "eval_ids": [p.id for p, f in zip(pairs, fit) if not f]}
                   for name, (pairs, _, fit) in data.items()}}, indent=2, default=str) + "\n")

    rows, curves, per_model = [], [], {}
    for model in config["models"]:
        if backends and model in backends:
            backend = backends[model]
        else:
            import torch
            backend = rlaif.TransformersBackend.from_pretrained(
                model, device="cuda" if torch.cuda.is_available() else "cpu", dtype=config["dtype"],
                batch_size=config["batch_size"], max_batch_tokens=config["max_batch_tokens"])
        for name, (pairs, task, fit) in data.items():
            print(f"{model} / {name}: {len(pairs)} pairs ({fit.sum()} fitting, {(~fit).sum()} evaluation)")
            human = np.array([np.nan if p.human_choice is None else p.human_choice for p in pairs], dtype=np.float64)
            passes = run_passes(pairs, fit, task, backend, config, results / "raw" / _file_name(model) / name)
            found = methods(passes, human, fit, config["pride_sample"], config["seed"])
            cv = cross_validated_alignment(passes, human, fit, config["pride_sample"], config["seed"])
            found.update(choose_best(found, cv, human, fit, config["min_coverage"]))
            per_model[(model, name)] = found
            rows += _rows(model, name, found, human, fit, cv=cv)
            curves += _curves(model, name, found, human, fit)
        del backend
    if len(config["models"]) > 1:  # soft labels averaged over the catalogue's models
        for name, (pairs, _, fit) in data.items():
            human = np.array([np.nan if p.human_choice is None else p.human_choice for p in pairs], dtype=np.float64)
            members = [replace(method, cost={f"{model}:{key}": price for key, price in method.cost.items()})
                       for model in config["models"] for method in [per_model[(model, name)]["plain+cal"]]]
            ensemble = {"ensemble:models": _mean_of(members),
                        "ensemble:models:fitted": _stack_of(members, human[fit], fit)}
            rows += _rows("+".join(config["models"]), name, ensemble, human, fit,
                          per_model[(config["models"][0], name)]["plain"])

    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    write_table(table, results / "table")
    curve_table = pd.DataFrame(curves)
    curve_table.to_csv(results / "abstention.csv", index=False)
    plot(table, curve_table, results / "plots")
    shown = table[["model", "dataset", "method", "alignment", "ci_low", "ci_high", "gain_low", "position_consistency",
                   "coverage"]]
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nwrote {results / 'table.md'}, table.csv/json, abstention.csv, plots/ and config.json")
    return table


def _rows(model: str, dataset: str, found: dict[str, Method], human: np.ndarray, fit: np.ndarray,
          plain: Method | None = None, cv: dict[str, float] | None = None) -> list[dict]:
    plain = plain or found["plain"]
    cv = cv or {}
    return [{"model": model, "dataset": dataset, "method": name, **evaluate(method, human, fit, plain),
             "fit_alignment_cv": cv.get(name, float("nan"))} for name, method in found.items()]


def _curves(model: str, dataset: str, found: dict[str, Method], human: np.ndarray, fit: np.ndarray) -> list[dict]:
    out = []
    for name in ("plain", "best"):
        curve = debiasing.abstention_curve(found[name].p[~fit], human[~fit])
        out += [{"model": model, "dataset": dataset, "method": name if name == "plain" else
                 f"best ({found[name].fitted['chosen']})", **row} for row in curve.to_dict(orient="records")]
    return out


if __name__ == "__main__":
    main()
