"""Best-of-N: improve a policy by rejection sampling against each reward, judged by the pairwise AI labeler.

    python experiments/best_of_n.py                         # experiments/best_of_n.yaml
    python experiments/best_of_n.py --prompts 8 --n 4
    python experiments/best_of_n.py --config experiments/best_of_n_instruct.yaml   # after rlaif_vs_rlhf_rm_instruct

A policy samples N responses per prompt. Each reward function picks its best one:
RM_AI and RM_HF (reward models saved by experiments/rlaif_vs_rlhf_rm.py), the direct
1-10 scorer (d-RLAIF), and a seeded random pick as the baseline. The pairwise AI labeler
(both orders, swap-averaged) then judges each pick against the random pick of the same
prompt; a pick identical to the random one is a tie and not sent to the judge. Win rate
= wins / (wins + losses), with a 95% Wilson interval.

Every reward is a plain callable ``reward(prompts, completions) -> list[float]`` (TRL's
reward-function convention), so an RL trainer can take the same objects later.

Writes to RESULTS: samples.jsonl (prompts, samples, each reward's scores, the picks),
judgements.jsonl (the judge's rows), win_rates.csv / .json / .md, config.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import rlaif
from rlaif.analysis.report import write_table
from rlaif.config_files import ANY_KEYS, read_config
from rlaif.metrics import win_rate
from rlaif.pairs import PreferencePair
from rlaif.training.reward_model import load_reward_models

HERE = Path(__file__).resolve().parent
CONFIG_SCHEMA = {
    "policy": {"model": None, "chat_template": None},
    "judge": {"model": None, "task": None, "preamble": None, "chat_template": None},
    "data": {"format": None, "path": None, "skip": None, "prompts": None, "heldout_from": None},
    "samples": {"n": None, "temperature": None, "max_new_tokens": None, "stop": None},
    "reward_models": ANY_KEYS,  # name: folder of a saved reward model (load_reward_models checks each)
    "direct_scorer": None,
    "results": None,
    "seed": None,
}
Reward = Callable[[Sequence[str], Sequence[str]], list[float]]


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "best_of_n.yaml"))
    parser.add_argument("--prompts", type=int, help="number of prompts")
    parser.add_argument("--n", type=int, help="samples per prompt")
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    if args.prompts:
        config["data"]["prompts"] = args.prompts
    if args.n:
        config["samples"]["n"] = args.n
    if args.results:
        config["results"] = args.results
    return config


def held_out_prompts(data: dict) -> list[str]:
    """The prompts to sample for: ``prompts`` contexts after ``skip`` pairs, or, with ``heldout_from``
    (a reward-model experiment's config.json), the contexts of its held-out pairs: instructions no RM
    trained on."""
    if data.get("heldout_from"):
        ids = set(json.loads(Path(data["heldout_from"]).read_text())["heldout_ids"])
        pairs = [pair for pair in rlaif.load_pairs(data["path"], data["format"]) if pair.id in ids]
        if not pairs:
            raise SystemExit(f"{data['heldout_from']}: none of its held-out ids are in {data['path']}")
        return list(dict.fromkeys(pair.context for pair in pairs))[:data.get("prompts")]
    pairs = rlaif.load_pairs(data["path"], data["format"], limit=data.get("skip", 0) + data["prompts"])
    return list(dict.fromkeys(pair.context for pair in pairs[data.get("skip", 0):]))


def pick_best(prompts: Sequence[str], samples: Sequence[Sequence[str]],
              reward: Reward) -> tuple[list[int], list[list[float]]]:
    """Index of the highest-reward sample per prompt (first on ties), and all the rewards."""
    flat = reward([p for p, group in zip(prompts, samples) for _ in group], [s for group in samples for s in group])
    scores, start = [], 0
    for group in samples:
        scores.append([float(x) for x in flat[start:start + len(group)]])
        start += len(group)
    return [int(np.argmax(group)) for group in scores], scores


def main(argv=None) -> pd.DataFrame:
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    data, sampling, seed = config["data"], config["samples"], config.get("seed", 0)
    prompts = held_out_prompts(data)

    policy = rlaif.TransformersBackend.from_pretrained(config["policy"]["model"])
    chat = config["policy"].get("chat_template", False)  # an instruct policy answers inside its chat template
    samples = policy.generate([policy.chat_prompt(p, "") if chat else p for p in prompts], n=sampling["n"],
                              temperature=sampling.get("temperature", 0.9),
                              max_new_tokens=sampling.get("max_new_tokens", 48), seed=seed,
                              stop=sampling.get("stop", ["\n\nHuman:"]))
    samples = [[text.strip() if chat else text if text.startswith(" ") else " " + text.lstrip() for text in group]
               for group in samples]

    judge_config = config["judge"]
    judge = policy if judge_config["model"] == config["policy"]["model"] else \
        rlaif.TransformersBackend.from_pretrained(judge_config["model"])
    template = rlaif.PromptTemplate(judge_config["task"], judge_config.get("preamble", "base"))
    rewards: dict[str, Reward] = load_reward_models(config.get("reward_models", {}))
    if config.get("direct_scorer", True):
        rewards["direct (d-RLAIF)"] = rlaif.DirectScorer(judge, template,
                                                         chat_template=judge_config.get("chat_template", True))
    rng = np.random.default_rng(seed)
    picks = {"random": [int(rng.integers(len(group))) for group in samples]}
    scores = {}
    for name, reward in rewards.items():
        picks[name], scores[name] = pick_best(prompts, samples, reward)
        print(f"{name}: picked", flush=True)

    comparisons, owners = [], []
    for name in rewards:
        for i, (prompt, group) in enumerate(zip(prompts, samples)):
            mine, baseline = group[picks[name][i]], group[picks["random"][i]]
            if mine != baseline:
                comparisons.append(PreferencePair(f"{name}|{i}", prompt, mine, baseline))
                owners.append(name)
    judged = rlaif.label_pairs(comparisons, judge, template, chat_template=judge_config.get("chat_template", True),
                               out=results / "judgements.jsonl", fresh=True) if comparisons else pd.DataFrame()
    rows = []
    for name in rewards:
        mine = judged[[owner == name for owner in owners]] if comparisons else judged
        wins, losses = (int((mine["p"] > 0.5).sum()) if len(mine) else 0,
                        int((mine["p"] < 0.5).sum()) if len(mine) else 0)
        rows.append({"selector": name, "prompts": len(prompts), **win_rate(wins, losses, len(prompts) - wins - losses)})
    table = pd.DataFrame(rows)

    with open(results / "samples.jsonl", "w") as handle:
        for i, (prompt, group) in enumerate(zip(prompts, samples)):
            record = {"prompt": prompt, "samples": group, "picks": {name: pick[i] for name, pick in picks.items()},
                      "scores": {name: score[i] for name, score in scores.items()}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    write_table(table, results / "win_rates")
    (results / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main()
