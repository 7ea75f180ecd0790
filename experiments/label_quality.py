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
fitting part (``rlaif.analysis.label_methods``), and every number in the table is on the evaluation
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
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import label_shared_data  # a sibling script: python puts experiments/ on sys.path when it runs one
import numpy as np
import pandas as pd

import rlaif
from rlaif import debiasing
from rlaif.analysis.label_methods import (
    Method,
    PairPass,
    Passes,
    choose_best,
    content_free_pairs,
    cross_validated_alignment,
    evaluate,
    mean_of,
    methods,
    split,
    stack_of,
)
from rlaif.analysis.report import write_table
from rlaif.config_files import EACH, ConfigError, read_config, schema_of
from rlaif.label_store import read_journal
from rlaif.pairs import PreferencePair

HERE = Path(__file__).resolve().parent
DATASETS = {name: (fmt, relative, task) for name, fmt, relative, task in label_shared_data.DATASETS}

CONFIG_SCHEMA = {
    "models": None, "datasets": None,  # lists of names; the data set names are checked in load_config
    "data_root": None, "skip": None, "limit": None, "fit_fraction": None, "seed": None, "chat_template": None,
    "content_free": None, "content_free_contexts": None, "pride_sample": None,
    "label_words": {EACH: {"labels": None, "names": None, "ending": None}},  # rlaif.PromptTemplate's
    "preambles": None, "min_coverage": None, "batch_size": None, "max_batch_tokens": None, "dtype": None,
    "techniques": {EACH: schema_of(rlaif.Prompting)},
    "results": None,
}
DEFAULTS = {"data_root": "../shared/data", "skip": 0, "limit": 100, "fit_fraction": 0.5, "seed": 0,
            "chat_template": True, "content_free": ["N/A", "[MASK]", ""], "content_free_contexts": 4,
            "pride_sample": 16, "label_words": {}, "preambles": ["base"], "min_coverage": 0.5, "batch_size": 64,
            "max_batch_tokens": 4096, "dtype": "float32", "techniques": {}, "results": "results/label_quality"}
TABLE_COLUMNS = ["model", "dataset", "method", "eval_pairs", "alignment", "ci_low", "ci_high", "gain_vs_plain",
                 "gain_low", "gain_high", "kappa", "ece", "position_consistency", "coverage", "agrees_with_swap",
                 "prompts_per_pair", "seconds_per_pair", "fit_alignment", "fit_alignment_cv", "fitted"]


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "label_quality.yaml"))
    parser.add_argument("--limit", type=int, help="pairs per data set (fitting + evaluation)")
    parser.add_argument("--models", nargs="+", help="replace the config's models")
    parser.add_argument("--datasets", nargs="+", help="replace the config's data sets")
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = {**DEFAULTS, **read_config(args.config, CONFIG_SCHEMA)}
    for key in ("limit", "models", "datasets", "results"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    unknown = set(config["datasets"]) - set(DATASETS)
    if unknown:
        raise SystemExit(f"{args.config}: unknown datasets {sorted(unknown)}; known: {sorted(DATASETS)}")
    for name, settings in config["techniques"].items():
        try:
            rlaif.Prompting(**settings)  # bad values fail here (the schema checked the keys)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{args.config}: techniques.{name}: {error}") from None
    return config


# --------------------------------------------------------------------------- passes (what the labeler runs)


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


# --------------------------------------------------------------------------- the table


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
        ax.errorbar(part["alignment"], y, fmt="o", capsize=3,
                    xerr=[part["alignment"] - part["ci_low"], part["ci_high"] - part["alignment"]])
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
            ensemble = {"ensemble:models": mean_of(members),
                        "ensemble:models:fitted": stack_of(members, human[fit], fit)}
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


if __name__ == "__main__":
    main()
