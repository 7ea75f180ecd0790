"""What PriDe saves for real: one order on most pairs instead of both, on the same model, pairs and prompts.

Run: .venv/bin/python benchmarks/pride_cost.py --model qwen2.5-coder-0.5b --pairs 100 \
         --json benchmarks/results/pride_cost.json

Two labelers over the same pairs, one model load:
  both orders  ``label_pairs`` as shipped: every pair in both orders, swap-averaged.
  pride        ``label_pairs_pride``: ``--sample`` seeded pairs in both orders, the rest in one,
               the position prior from the sample divided out.
The saving in prompts is fixed by the arithmetic ((n + sample) / 2n); the saving in seconds is
not, because the transformers backend shares the context's cached prefix between a pair's two
orders, and one order has nothing to share it with. Also reported: how often the two labelers
pick the same response, and each one's alignment with the human labels (95% bootstrap interval).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import rlaif
from rlaif import metrics

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
SETS = {"llmbar-natural": ("llmbar/LLMBar_Natural/dataset.json", "llmbar", "instruction"),
        "hh-rlhf-harmless": ("hh-rlhf/harmless-base/dev.jsonl.gz", "hh-rlhf", "harmless")}


def timed(label) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    rows = label()
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--dataset", default="llmbar-natural", choices=sorted(SETS))
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--sample", type=int, default=16, help="pairs PriDe labels in both orders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(HERE / "results" / "pride_cost.json"))
    args = parser.parse_args()

    relative, fmt, task = SETS[args.dataset]
    pairs = list(rlaif.load_pairs(DATA / relative, fmt, limit=args.pairs))
    template = rlaif.PromptTemplate(task)
    backend = rlaif.TransformersBackend.from_pretrained(args.model, device="cpu", dtype="float32")
    rlaif.label_pairs(pairs[:2], backend, template, chat_template=True, progress=False)  # warm-up, not timed

    counted = {"prompts": 0}
    label_logprobs = backend.label_logprobs

    def counting(prompts, labels):
        counted["prompts"] += len(prompts)
        return label_logprobs(prompts, labels)

    backend.label_logprobs = counting
    runs = {}
    for name, label in (("both_orders", lambda: rlaif.label_pairs(pairs, backend, template, chat_template=True)),
                        ("pride", lambda: rlaif.label_pairs_pride(pairs, backend, template, chat_template=True,
                                                                  sample_pairs=args.sample, seed=args.seed))):
        counted["prompts"] = 0
        rows, seconds = timed(label)
        runs[name] = {"rows": rows, "seconds": seconds, "prompts": counted["prompts"]}

    both, pride = runs["both_orders"]["rows"], runs["pride"]["rows"]
    result = {
        "model": args.model, "dataset": args.dataset, "pairs": len(pairs), "sample_pairs": args.sample,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "pride_prior": pride["debiasing"][0]["prior"],
        "same_choice": float((both["ai_choice"] == pride["ai_choice"]).mean()),
    }
    for name, run in runs.items():
        ci = metrics.alignment_ci(run["rows"])
        result[name] = {"seconds": round(run["seconds"], 2), "seconds_per_pair": round(run["seconds"] / len(pairs), 3),
                        "prompts": run["prompts"], "alignment": ci["alignment"], "ci_low": ci["low"],
                        "ci_high": ci["high"],
                        "same_position_both_orders": metrics.position_bias(run["rows"])["same_position"]}
    result["seconds_saved"] = round(1 - runs["pride"]["seconds"] / runs["both_orders"]["seconds"], 3)
    result["prompts_saved"] = round(1 - runs["pride"]["prompts"] / runs["both_orders"]["prompts"], 3)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
