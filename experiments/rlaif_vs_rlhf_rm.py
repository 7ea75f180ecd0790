"""RLAIF vs RLHF reward models: the same reward model trained on AI labels and on human labels.

    python experiments/rlaif_vs_rlhf_rm.py                                          # harmless: rlaif_vs_rlhf_rm.yaml
    python experiments/rlaif_vs_rlhf_rm.py --config experiments/rlaif_vs_rlhf_rm_instruct.yaml
    python experiments/rlaif_vs_rlhf_rm.py --limit 100 --results results/rm100

The shape of Lee et al. 2023, Table 5. Human-labeled pairs are split (seeded) into a fitting
part and a held-out part that never share a pair. The AI labeler labels both (resumably); its
alignment on the held-out part is a row of the table. Then one reward model per label source
is trained with identical settings and seed on the same training pairs: on the human labels
(RM_HF), on the AI soft labels (RM_AI, distilled RLAIF) and on hard AI labels (argmax). Each
is scored on the held-out human labels: accuracy with a 95% bootstrap interval, its paired
difference with RM_HF, and the calibration of sigmoid(r1 - r2).

Two shapes of ``data``:
- ``{format, path, limit, train_fraction, seed}``: one set, split pair by pair.
- ``{pool: [{format, path, limit}, ...], heldout_pairs, human_pairs, seed}``: the held-out part is
  whole contexts (instructions) of the pool's first set, drawn until it holds ``heldout_pairs``
  pairs with a human majority, so no response to a held-out instruction is ever trained on.
  RM_HF gets ``human_pairs`` human-labeled pairs of the fitting part; ``ai_pairs: [n, ...]`` adds
  RM_AI arms trained on the AI labels of n fitting pairs (the human pairs first, then pairs
  whose human labels are hidden): RLAIF's point, that AI labels are cheap, as a curve.
Intervals resample whole contexts (``metrics`` clusters): pairs of one instruction move together.

``prompt_choice`` tries prompt variants (shots, preamble, chain-of-thought) on human-labeled
fitting pairs only and keeps one only if its paired gain over the configured prompt is above
zero with 95% confidence; the held-out part never decides anything.

Writes to RESULTS: ai_labels.jsonl (the labeler's rows), score_cache.sqlite, prompt_choice.*
and prompt_choice/ (when configured), table.csv / .json / .md (one row per labeler), curve.*
and curve.png (with ``ai_pairs``), history.csv (per epoch), heldout_rewards.csv (each RM's
rewards on the held-out pairs), features.pt (the frozen backbone's features: a rerun reuses
them), config.json (the split's ids, the chosen prompt, each stage's seconds) and each RM
under rm_<source>/ when save_models is on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import rlaif
from rlaif import metrics
from rlaif.analysis.report import json_safe, write_table
from rlaif.config_files import EACH, ConfigError, check_keys, read_config, schema_of
from rlaif.pairs import PreferencePair
from rlaif.prompting import Prompting
from rlaif.score_cache import CachedBackend
from rlaif.soft_labels import choice
from rlaif.training.reward_model import (
    RewardModel,
    RewardTrainingConfig,
    reward_model_labels,
    targets_from_labels,
    train_reward_model,
)

HERE = Path(__file__).resolve().parent
SOURCES = {"human": "RM_HF (human labels)", "ai_soft": "RM_AI (AI soft labels)", "ai_hard": "RM_AI hard (AI argmax)"}
#: The two shapes of ``data`` (module docstring); the schema takes the keys of either, load_config refuses a mix.
ONE_SET_KEYS = {"format", "path", "limit", "train_fraction", "seed"}
POOL_KEYS = {"pool", "heldout_pairs", "human_pairs", "seed"}
POOL_ENTRY_SCHEMA = {"format": None, "path": None, "limit": None}  # each item of the list data.pool
#: The labeler's prompt settings (prompting_for), which a prompt_choice variant may replace.
PROMPT_SCHEMA = {"preamble": None, "shots": None, "cot": None, "cot_max_tokens": None}
CONFIG_SCHEMA = {
    "labeler": {"model": None, "task": None, "chat_template": None, "dtype": None, **PROMPT_SCHEMA},
    "data": dict.fromkeys(ONE_SET_KEYS | POOL_KEYS),
    "reward_model": schema_of(RewardTrainingConfig, backbone=None),
    "sources": None,  # names from SOURCES, checked in load_config
    "min_confidence": None,
    "save_models": None,
    "results": None,
    "prompt_choice": {"pairs": None, "variants": {EACH: {**PROMPT_SCHEMA, "pairs": None, "choose": None}}},
    "ai_pairs": None,
    "ai_pairs_labels": None,
    "human_pairs_curve": None,
}


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "rlaif_vs_rlhf_rm.yaml"))
    parser.add_argument("--limit", type=int, help="pairs in all (train + held out; the one-set shape)")
    parser.add_argument("--results")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    data = config["data"]
    shape, name = (POOL_KEYS, "pool") if "pool" in data else (ONE_SET_KEYS, "one-set")
    if set(data) - shape:
        raise ConfigError(f"{args.config}: data keys {sorted(set(data) - shape)} are not read in the {name} shape "
                          f"of data, which takes {sorted(shape)}")
    if "pool" in data:
        if not isinstance(data["pool"], list):
            raise ConfigError(f"{args.config}: data.pool must be a list of {{format, path, limit}}")
        for i, part in enumerate(data["pool"]):
            check_keys(part, POOL_ENTRY_SCHEMA, f"data.pool[{i}]", args.config)
    if args.limit:
        config["data"]["limit"] = args.limit
    if args.results:
        config["results"] = args.results
    if args.epochs:
        config["reward_model"]["epochs"] = args.epochs
    bad = set(config.get("sources", SOURCES)) - set(SOURCES)
    if bad:
        raise SystemExit(f"{args.config}: unknown sources {sorted(bad)}; known: {sorted(SOURCES)}")
    if ("ai_pairs" in config or "human_pairs_curve" in config) and "pool" not in config["data"]:
        raise SystemExit(f"{args.config}: ai_pairs and human_pairs_curve need the pool shape of data "
                         "(pool, heldout_pairs, human_pairs)")
    return config


# ------------------------------------------------------------------ the split

def split(pairs, train_fraction: float, seed: int):
    """Seeded split into (train, held out); the two never share a pair."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    cut = int(round(train_fraction * len(pairs)))
    return [pairs[i] for i in sorted(order[:cut])], [pairs[i] for i in sorted(order[cut:])]


def labeled(pair: PreferencePair) -> bool:
    return pair.human_choice in (1, 2)


def split_by_context(pool: list[list[PreferencePair]], heldout_pairs: int, seed: int):
    """(fitting part in seeded order, held out): whole contexts of ``pool[0]`` are held out, in a
    seeded order, until they hold ``heldout_pairs`` pairs with a human label of 1 or 2. The fitting
    part is the rest of ``pool[0]`` (seeded order) followed by the other sets (seeded order)."""
    rng = np.random.default_rng(seed)
    first = pool[0]
    contexts = list(dict.fromkeys(pair.context for pair in first))
    held, count = set(), 0
    for i in rng.permutation(len(contexts)):
        if count >= heldout_pairs:
            break
        held.add(contexts[i])
        count += sum(labeled(pair) for pair in first if pair.context == contexts[i])
    if count < heldout_pairs:
        raise SystemExit(f"the first set has only {count} human-labeled pairs; heldout_pairs is {heldout_pairs}")
    heldout = [pair for pair in first if pair.context in held]
    fitting = []
    for pairs in pool:
        rest = [pair for pair in pairs if pair.context not in held]
        fitting += [rest[i] for i in rng.permutation(len(rest))]
    return fitting, heldout


def plan(config: dict) -> dict[str, list[PreferencePair]]:
    """Which pairs play which part: heldout, human (RM_HF's training pairs), ai (the AI-labeled
    training pairs in order, the human ones first) and fitting (all pairs a choice may look at)."""
    data = config["data"]
    if "pool" not in data:
        pairs = rlaif.load_pairs(data["path"], data["format"], limit=data.get("limit"))
        train, heldout = split(pairs, data.get("train_fraction", 0.6), data.get("seed", 0))
        return {"heldout": heldout, "human": train, "ai": train, "fitting": train, "with_label": train}
    pool = [rlaif.load_pairs(part["path"], part["format"], limit=part.get("limit")) for part in data["pool"]]
    fitting, heldout = split_by_context(pool, data["heldout_pairs"], data.get("seed", 0))
    with_label = [pair for pair in fitting if labeled(pair)]
    human = with_label[:data.get("human_pairs", len(with_label))]
    chosen = {pair.id for pair in human}
    ai = human + [pair for pair in fitting if pair.id not in chosen]
    most = max(curve_sizes(config.get("ai_pairs", []), len(ai)) + [len(human)])
    if most > len(ai):
        raise SystemExit(f"ai_pairs asks for {most} AI-labeled pairs; the fitting part has {len(ai)}")
    if max(config.get("human_pairs_curve", [0])) > len(with_label):
        raise SystemExit(f"human_pairs_curve asks for more than the {len(with_label)} human-labeled fitting pairs")
    return {"heldout": heldout, "human": human, "ai": ai[:most], "fitting": fitting, "with_label": with_label}


def curve_sizes(sizes: list, available: int) -> list[int]:
    """A curve's training-set sizes; "all" is every pair available."""
    return [available if size == "all" else int(size) for size in sizes]


# ------------------------------------------------------------------ the labeler

def prompting_for(labeler: dict, variant: dict | None = None) -> tuple[rlaif.PromptTemplate, Prompting]:
    settings = {**labeler, **(variant or {})}
    template = rlaif.PromptTemplate(labeler["task"], settings.get("preamble", "base"))
    return template, Prompting(preambles=(template.preamble,), shots=settings.get("shots", 0),
                               cot=settings.get("cot", False), cot_max_tokens=settings.get("cot_max_tokens", 256))


def right(labels: pd.DataFrame, pairs: list[PreferencePair]) -> np.ndarray:
    """Per pair (in ``pairs``' order): does the labeler agree with the human label."""
    p = labels.set_index("id").loc[[pair.id for pair in pairs], "p"].to_numpy(dtype=np.float64)
    return choice(p) == np.array([pair.human_choice for pair in pairs])


def choose_prompt(config: dict, backend, fitting: list[PreferencePair], results: Path) -> tuple[dict, pd.DataFrame]:
    """The prompt variant to label with: the configured one unless a variant beats it, on fitting
    pairs only, by a paired difference whose 95% interval is above zero. A variant with
    ``choose: false`` is measured and reported but never used at scale (too slow for the budget)."""
    labeler, settings = config["labeler"], config["prompt_choice"]
    pool = [pair for pair in fitting if labeled(pair)][:settings["pairs"]]
    folder = results / "prompt_choice"
    folder.mkdir(exist_ok=True)
    chat = labeler.get("chat_template", True)
    rows, best, reference = [], ("configured", {}, 0.0), None
    for name, variant in {"configured": {}, **settings.get("variants", {})}.items():
        variant = dict(variant)
        pairs, eligible = pool[:variant.pop("pairs", len(pool))], variant.pop("choose", True)
        template, prompting = prompting_for(labeler, variant)
        labels = rlaif.label_pairs(pairs, backend, template, chat_template=chat, prompting=prompting,
                                   out=folder / f"{name}.jsonl")
        reference = labels if reference is None else reference
        gain = metrics.paired_difference_ci(right(labels, pairs), right(reference, pairs),
                                            clusters=[pair.context for pair in pairs])
        rows.append({"variant": name, **variant, "pairs": len(pairs), "alignment": float(right(labels, pairs).mean()),
                     "gain": gain["difference"], "gain_low": gain["low"], "gain_high": gain["high"],
                     "eligible": eligible})
        if gain["low"] > 0 and gain["difference"] > best[2] and eligible:
            best = (name, variant, gain["difference"])
    table = pd.DataFrame(rows)
    table["chosen"] = table["variant"] == best[0]
    write_table(table, results / "prompt_choice")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"), flush=True)
    return best[1], table


# ------------------------------------------------------------------ the table

def clusters_of(pairs: list[PreferencePair]) -> list[str]:
    return [pair.context for pair in pairs]


def scored_row(name: str, labels: pd.DataFrame, heldout: list[PreferencePair], **extra) -> dict:
    labels = labels.set_index("id").loc[[pair.id for pair in heldout]].reset_index()
    ci = metrics.alignment_ci(labels, clusters=clusters_of(heldout))
    calibration = metrics.calibration(labels)
    return {"labeler": name, "heldout_accuracy": ci["alignment"], "ci_low": ci["low"], "ci_high": ci["high"],
            "heldout_pairs": ci["n"], "ece": calibration["ece"], "brier": calibration["brier"], **extra}


def annotator_row(heldout: list[PreferencePair]) -> dict | None:
    """Each annotator against the majority of the others, on the held-out pairs with a human majority:
    a person scored the way the AI labeler is (``metrics.human_agreement``'s annotator_vs_majority)."""
    cases, contexts = [], []
    for pair in filter(labeled, heldout):
        agree = metrics.annotator_vs_majority_cases(list(pair.metadata.get("human_choices") or []))
        cases += agree
        contexts += [pair.context] * len(agree)
    if not cases:
        return None
    ci = metrics.mean_ci(cases, clusters=contexts)
    return {"labeler": "Human annotator (each vs the others' majority)", "heldout_accuracy": ci["mean"],
            "ci_low": ci["low"], "ci_high": ci["high"], "heldout_pairs": sum(map(labeled, heldout)),
            "train_pairs": 0, "annotator_cases": ci["n"]}


def with_difference(row: dict, right_this: np.ndarray, right_hf: np.ndarray | None, heldout) -> dict:
    if right_hf is None:
        return row
    diff = metrics.paired_difference_ci(right_this, right_hf, clusters=clusters_of(heldout))
    return {**row, "minus_rm_hf": diff["difference"], "diff_low": diff["low"], "diff_high": diff["high"]}


# ------------------------------------------------------------------ features on disk

def load_features(path: Path, key: dict) -> dict:
    if path.is_file():
        saved = torch.load(path)
        if saved.get("key") == key:
            return saved["features"]
    return {}


def save_features(path: Path, key: dict, features: dict) -> None:
    part = path.with_suffix(".part")
    torch.save({"key": key, "features": features}, part)
    part.replace(path)


def plot_curve(curve: pd.DataFrame, path: Path) -> None:
    """Held-out accuracy against training pairs, one line per kind of label, with 95% intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.6))
    for k, (labels, part) in enumerate(curve.sort_values("training_pairs").groupby("labels", sort=True)):
        shift = (k - 1) * 6  # side by side where several have a point
        ax.errorbar(part["training_pairs"] + shift, part["heldout_accuracy"],
                    yerr=[part["heldout_accuracy"] - part["ci_low"], part["ci_high"] - part["heldout_accuracy"]],
                    marker="o", capsize=4, label=f"{labels} labels ({'RM_HF' if labels == 'human' else 'RM_AI'})")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("held-out accuracy vs the human majority")
    ax.set_title("Reward models: AI labels vs human labels, by amount")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main

def main(argv=None) -> pd.DataFrame:
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    labeler, seconds, started_all = config["labeler"], {}, time.time()
    parts = plan(config)
    heldout, human = parts["heldout"], parts["human"]
    print(f"{len(parts['fitting'])} fitting pairs ({len(human)} for RM_HF, {len(parts['ai'])} AI-labeled), "
          f"{len(heldout)} held out ({sum(map(labeled, heldout))} with a human majority)", flush=True)

    started = time.time()
    backend = rlaif.TransformersBackend.from_pretrained(labeler["model"], dtype=labeler.get("dtype"))
    backend = CachedBackend(backend, results / "score_cache.sqlite")
    variant = {}
    if config.get("prompt_choice"):
        variant, _ = choose_prompt(config, backend, parts["fitting"], results)
        seconds["prompt_choice"] = round(time.time() - started, 1)
        started = time.time()
    template, prompting = prompting_for(labeler, variant)
    to_label = list({pair.id: pair for pair in heldout + parts["ai"]}.values())
    labels = rlaif.label_pairs(to_label, backend, template, chat_template=labeler.get("chat_template", True),
                               prompting=prompting, out=results / "ai_labels.jsonl")
    seconds["labeling"] = round(time.time() - started, 1)
    del backend
    rows = [row for row in [annotator_row(heldout)] if row]
    heldout_labels = labels[labels["id"].isin({pair.id for pair in heldout})]
    humans = {**metrics.human_agreement(heldout_labels), "ai_vs_annotators": metrics.ai_vs_annotators(heldout_labels)}
    ai_row = len(rows)
    rows.append(scored_row(f"AI labeler ({labeler['model']})", labels, heldout, train_pairs=0,
                           seconds=seconds["labeling"]))

    rm_settings = dict(config["reward_model"])
    backbone = rm_settings.pop("backbone")
    training = RewardTrainingConfig(**rm_settings)
    frozen = training.trainable == "head"
    if frozen:  # one backbone for every arm; each arm starts from the same fresh head
        shared = RewardModel.from_backbone(backbone, seed=training.seed)
        fresh_head = {k: v.clone() for k, v in shared.head.state_dict().items()}
        feature_key = {"backbone": backbone, "max_length": training.max_length,
                       "precision": shared.feature_precision}
        features = load_features(results / "features.pt", feature_key)
    evaluate = targets_from_labels(heldout_labels, heldout, "human")
    histories, rewards = [], {"id": [p.id for p in heldout], "human_choice": [p.human_choice for p in heldout]}
    heldout_scored = [pair for pair in heldout if labeled(pair)]
    arms = [(SOURCES[source], source, human) for source in config.get("sources", list(SOURCES))]
    arms += [(f"RM_AI (AI {source[3:]} labels, {n} pairs)", source, parts["ai"][:n])
             for source in config.get("ai_pairs_labels", ["ai_soft"])
             for n in curve_sizes(config.get("ai_pairs", []), len(parts["ai"]))]
    arms += [(f"RM_HF (human labels, {n} pairs)", "human", parts["with_label"][:n])
             for n in config.get("human_pairs_curve", [])]
    right_hf, curve, started_rms = None, [], time.time()
    for name, source, train in arms:
        started = time.time()
        train_labels = labels[labels["id"].isin({pair.id for pair in train})]
        targets = targets_from_labels(train_labels, train, source,
                                      min_confidence=config.get("min_confidence", 0.0) if source != "human" else 0.0)
        if frozen:
            rm = shared
            rm.head.load_state_dict(fresh_head)
        else:
            rm = RewardModel.from_backbone(backbone, seed=training.seed)
        history = train_reward_model(rm, targets, config=training, labels_source=source, evaluate=evaluate,
                                     features=features if frozen else None)
        if frozen:
            save_features(results / "features.pt", feature_key, features)
        histories += [{"rm": name, "source": source, **record} for record in history]
        rm_labels = reward_model_labels(heldout, rm)
        key = source if name == SOURCES.get(source) else f"{source}_{len(train)}"
        rewards[f"{key}_reward_1"], rewards[f"{key}_reward_2"] = rm_labels["reward_1"], rm_labels["reward_2"]
        right_this = right(rm_labels, heldout_scored)
        if source == "human" and right_hf is None:
            right_hf = right_this
        row = with_difference(scored_row(name, rm_labels, heldout, train_pairs=len(targets),
                                         seconds=round(time.time() - started, 1)), right_this, right_hf, heldout_scored)
        rows.append(row)
        if name != SOURCES.get(source):
            curve.append({"labels": {"ai_soft": "AI soft", "ai_hard": "AI hard"}.get(source, "human"),
                          "training_pairs": len(train), **row})
        save = config.get("save_models", True)
        if save is True or (isinstance(save, list) and key in save):
            rm.save(results / f"rm_{key}")
        print(f"{name}: held-out accuracy {row['heldout_accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]",
              flush=True)
    seconds["reward_models"] = round(time.time() - started_rms, 1)
    seconds["total"] = round(time.time() - started_all, 1)
    rows[ai_row] = with_difference(rows[ai_row], right(labels, heldout_scored), right_hf, heldout_scored)

    table = pd.DataFrame(rows)
    write_table(table, results / "table")
    if curve:
        write_table(pd.DataFrame(curve), results / "curve")
        plot_curve(pd.DataFrame(curve), results / "curve.png")
    pd.DataFrame(histories).to_csv(results / "history.csv", index=False)
    pd.DataFrame(rewards).to_csv(results / "heldout_rewards.csv", index=False)
    (results / "config.json").write_text(json.dumps(json_safe({
        **config, "prompt_chosen": variant, "seconds": seconds, "human_agreement_heldout": humans,
        "train_ids": [p.id for p in human], "ai_ids": [p.id for p in parts["ai"]],
        "heldout_ids": [p.id for p in heldout]}), indent=2) + "\n")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wall time {seconds['total']:.0f} s: {seconds}")
    return table


if __name__ == "__main__":
    main()
