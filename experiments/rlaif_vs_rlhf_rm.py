"""RLAIF vs RLHF reward models: the same reward model trained on AI labels and on human labels.

    python experiments/rlaif_vs_rlhf_rm.py                              # experiments/rlaif_vs_rlhf_rm.yaml
    python experiments/rlaif_vs_rlhf_rm.py --limit 100 --results results/rm100

The shape of Lee et al. 2023, Table 5: a human-labeled set is split (seeded) into a
training part and a held-out part. The AI labeler labels both (resumably); its
alignment on the held-out part is the first row. Then one reward model per label
source is trained with identical settings and seed: on the human labels (RM_HF), on
the AI soft labels (RM_AI, distilled RLAIF) and on hard AI labels (argmax). Each is
scored on the held-out human labels: accuracy with a 95% bootstrap interval, and the
calibration of sigmoid(r1 - r2).

Writes to RESULTS: ai_labels.jsonl (the labeler's rows), table.csv / .json / .md (one
row per labeler), history.csv (per epoch), heldout_rewards.csv (each RM's rewards on
the held-out pairs), config.json, and each RM under rm_<source>/ when save_models is on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import rlaif
from rlaif import metrics
from rlaif.experiment_config import read_config
from rlaif.prompting import Prompting
from rlaif.report import write_table
from rlaif.reward_model import (RewardModel, RewardTrainingConfig, reward_model_labels, targets_from_labels,
                                train_reward_model)

HERE = Path(__file__).resolve().parent
CONFIG_KEYS = {"labeler", "data", "reward_model", "sources", "min_confidence", "save_models", "results"}
SOURCES = {"human": "RM_HF (human labels)", "ai_soft": "RM_AI (AI soft labels)", "ai_hard": "RM_AI hard (AI argmax)"}


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "rlaif_vs_rlhf_rm.yaml"))
    parser.add_argument("--limit", type=int, help="pairs in all (train + held out)")
    parser.add_argument("--results")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_KEYS)
    if args.limit:
        config["data"]["limit"] = args.limit
    if args.results:
        config["results"] = args.results
    if args.epochs:
        config["reward_model"]["epochs"] = args.epochs
    bad = set(config.get("sources", SOURCES)) - set(SOURCES)
    if bad:
        raise SystemExit(f"{args.config}: unknown sources {sorted(bad)}; known: {sorted(SOURCES)}")
    RewardTrainingConfig(**{k: v for k, v in config["reward_model"].items() if k != "backbone"})  # typos fail here
    return config


def split(pairs, train_fraction: float, seed: int):
    """Seeded split into (train, held out); the two never share a pair."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    cut = int(round(train_fraction * len(pairs)))
    return [pairs[i] for i in sorted(order[:cut])], [pairs[i] for i in sorted(order[cut:])]


def scored_row(name: str, labels: pd.DataFrame, **extra) -> dict:
    ci = metrics.alignment_ci(labels)
    calibration = metrics.calibration(labels)
    return {"labeler": name, "heldout_accuracy": ci["alignment"], "ci_low": ci["low"], "ci_high": ci["high"],
            "heldout_pairs": ci["n"], "ece": calibration["ece"], "brier": calibration["brier"], **extra}


def main(argv=None) -> pd.DataFrame:
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    data, labeler = config["data"], config["labeler"]
    pairs = rlaif.load_pairs(data["path"], data["format"], limit=data.get("limit"))
    train, heldout = split(pairs, data.get("train_fraction", 0.6), data.get("seed", 0))
    print(f"{len(pairs)} pairs: {len(train)} to train on, {len(heldout)} held out", flush=True)

    started = time.time()
    backend = rlaif.TransformersBackend.from_pretrained(labeler["model"])
    template = rlaif.PromptTemplate(labeler["task"], labeler.get("preamble", "base"))
    prompting = Prompting(preambles=(template.preamble,), shots=labeler.get("shots", 0))
    labels = rlaif.label_pairs(train + heldout, backend, template, chat_template=labeler.get("chat_template", True),
                               prompting=prompting, out=results / "ai_labels.jsonl")
    label_seconds = time.time() - started
    del backend
    heldout_ids = {pair.id for pair in heldout}
    train_labels = labels[~labels["id"].isin(heldout_ids)]
    rows = [scored_row(f"AI labeler ({labeler['model']})", labels[labels["id"].isin(heldout_ids)],
                       train_pairs=0, seconds=round(label_seconds, 1))]

    rm_settings = dict(config["reward_model"])
    backbone = rm_settings.pop("backbone")
    training = RewardTrainingConfig(**rm_settings)
    features: dict = {}  # backbone features are shared by every head-only RM on this backbone
    evaluate = targets_from_labels(labels[labels["id"].isin(heldout_ids)], heldout, "human")
    histories, rewards = [], {"id": [p.id for p in heldout], "human_choice": [p.human_choice for p in heldout]}
    for source in config.get("sources", list(SOURCES)):
        started = time.time()
        targets = targets_from_labels(train_labels, train, source, min_confidence=config.get("min_confidence", 0.0)
                                      if source != "human" else 0.0)
        rm = RewardModel.from_backbone(backbone, seed=training.seed)
        history = train_reward_model(rm, targets, config=training, labels_source=source, evaluate=evaluate,
                                     features=features if training.trainable == "head" else None)
        histories += [{"source": source, **record} for record in history]
        rm_labels = reward_model_labels(heldout, rm)
        rewards[f"{source}_reward_1"], rewards[f"{source}_reward_2"] = rm_labels["reward_1"], rm_labels["reward_2"]
        rows.append(scored_row(SOURCES[source], rm_labels, train_pairs=len(targets),
                               seconds=round(time.time() - started, 1)))
        if config.get("save_models", True):
            rm.save(results / f"rm_{source}")
        print(f"{SOURCES[source]}: held-out accuracy {rows[-1]['heldout_accuracy']:.3f} "
              f"[{rows[-1]['ci_low']:.3f}, {rows[-1]['ci_high']:.3f}]", flush=True)

    table = pd.DataFrame(rows)
    write_table(table, results / "table")
    pd.DataFrame(histories).to_csv(results / "history.csv", index=False)
    pd.DataFrame(rewards).to_csv(results / "heldout_rewards.csv", index=False)
    (results / "config.json").write_text(json.dumps({**config, "train_ids": [p.id for p in train],
                                                     "heldout_ids": [p.id for p in heldout]}, indent=2) + "\n")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main()
