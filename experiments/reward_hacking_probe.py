"""Reward-hacking probe: how often each reward prefers a degenerate answer to a decent one, per attack.

    python experiments/reward_hacking_probe.py                # experiments/reward_hacking_probe.yaml

Builds the probe set from human-labeled pairs (``rlaif.training.probe``: the people-preferred response
against empty, repeated, padded, apologetic, flattering, judge-addressing and foreign-language
answers), then scores every probe pair with each reward: the saved reward models (RM_AI, RM_HF
from experiments/rlaif_vs_rlhf_rm.py), the direct 1-10 scorer and the pairwise AI labeler (both
orders). Writes probe.csv (one row per reward and attack: rate with a 95% Wilson interval),
probe.md (attacks x rewards), labels.jsonl (the pairwise labeler's rows) and config.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

import rlaif
from rlaif.config_files import ANY_KEYS, read_config
from rlaif.training.probe import ATTACKS, probe_labels, probe_pairs, probe_rewards
from rlaif.training.reward_model import load_reward_models

HERE = Path(__file__).resolve().parent
CONFIG_SCHEMA = {
    "labeler": {"model": None, "task": None, "preamble": None, "chat_template": None},
    "data": {"format": None, "path": None, "skip": None, "prompts": None},
    "attacks": None,            # a list of names from rlaif.training.probe.ATTACKS
    "reward_models": ANY_KEYS,  # name: folder of a saved reward model (load_reward_models checks each)
    "direct_scorer": None,
    "pairwise_labeler": None,
    "results": None,
}


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "reward_hacking_probe.yaml"))
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    if args.prompts:
        config["data"]["prompts"] = args.prompts
    if args.results:
        config["results"] = args.results
    return config


def main(argv=None) -> pd.DataFrame:
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    data, labeler = config["data"], config["labeler"]
    pairs = rlaif.load_pairs(data["path"], data["format"], limit=data.get("skip", 0) + data["prompts"])
    probes = probe_pairs(pairs[data.get("skip", 0):], config.get("attacks", list(ATTACKS)))
    print(f"{len(probes)} probe pairs", flush=True)

    rewards = load_reward_models(config.get("reward_models", {}))
    backend, template = None, rlaif.PromptTemplate(labeler["task"], labeler.get("preamble", "base"))
    if config.get("direct_scorer", True) or config.get("pairwise_labeler", True):
        backend = rlaif.TransformersBackend.from_pretrained(labeler["model"])
    if config.get("direct_scorer", True):
        rewards["direct (d-RLAIF)"] = rlaif.DirectScorer(backend, template,
                                                         chat_template=labeler.get("chat_template", True))
    tables = [probe_rewards(probes, rewards)]
    if config.get("pairwise_labeler", True):
        labels = rlaif.label_pairs(probes, backend, template, chat_template=labeler.get("chat_template", True),
                                   out=results / "labels.jsonl")
        tables.append(probe_labels(f"pairwise AI labeler ({labeler['model']})", probes, labels))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(results / "probe.csv", index=False)
    wide = table.pivot(index="attack", columns="reward", values="rate").loc[list(dict.fromkeys(table["attack"]))]
    lines = ["| attack | " + " | ".join(wide.columns) + " |", "|" + "---|" * (len(wide.columns) + 1)]
    lines += [f"| {attack} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for attack, row in wide.iterrows()]
    (results / "probe.md").write_text("\n".join(lines) + "\n")
    (results / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"share of prompts where the degenerate answer beats the reference ({len(probes) // len(wide)} prompts):")
    print(wide.to_string(float_format=lambda x: f"{x:.2f}"))
    return table


if __name__ == "__main__":
    main()
