"""Compare the catalogue's offline labelers on the shared human-labeled data: alignment per minute.

    python experiments/compare_models.py                         # every installed catalogue model
    python experiments/compare_models.py --models smollm2-135m,qwen2.5-coder-0.5b --limit 20

For each model: load it once (timed), then run experiments/label_shared_data.py with it
(same pairs, same templates), resumably, into RESULTS/<model>/. Instruct models get their
chat template; a model without one (gemma3-270m is a base model) gets the plain prompt.
Writes RESULTS/comparison.csv, RESULTS/comparison.json and RESULTS/comparison.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import label_shared_data  # a sibling script: python puts experiments/ on sys.path when it runs one
import pandas as pd

import rlaif
from rlaif.analysis.report import json_safe
from rlaif.backends.catalogue import CATALOGUE


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated names (default: every installed catalogue model)")
    parser.add_argument("--limit", type=int, default=20, help="pairs per data set")
    parser.add_argument("--datasets", default="hh-rlhf-harmless,hhh-harmless,hhh-helpful,llmbar-natural",
                        help="which of label_shared_data.DATASETS to use")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--results", default="results/compare_models")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else [e.name for e in CATALOGUE.values() if e.installed]
    results = Path(args.results)

    rows = []
    for model in models:
        started = time.time()
        backend = rlaif.TransformersBackend.from_pretrained(model)
        load_seconds = time.time() - started
        chat = bool(getattr(backend.tokenizer, "chat_template", None))
        table = label_shared_data.main(
            ["--model", model, "--limit", str(args.limit), "--data-root", args.data_root, "--quiet",
             "--results", str(results / model), "--chat-template" if chat else "--no-chat-template",
             "--datasets", args.datasets], backend=backend)
        scored = table["pairs_scored"].sum()
        agreed = (table["alignment"] * table["pairs_scored"]).sum()
        rows.append({
            "model": model, "parameters": CATALOGUE[model].parameters if model in CATALOGUE else "",
            "chat_template": chat, "pairs": int(table["pairs"].sum()), "pairs_scored": int(scored),
            "alignment": agreed / scored if scored else float("nan"),
            **{f"alignment_{r.dataset}": r.alignment for r in table.itertuples()},
            "same_position": float((table["same_position"] * table["pairs"]).sum() / table["pairs"].sum()),
            "mean_candidate_mass": float((table["mean_candidate_mass"] * table["pairs"]).sum() / table["pairs"].sum()),
            "load_seconds": round(load_seconds, 1),
            "seconds_per_pair": round(float(table["seconds"].sum() / table["pairs"].sum()), 2),
        })
        del backend

    comparison = pd.DataFrame(rows)
    results.mkdir(parents=True, exist_ok=True)
    comparison.to_csv(results / "comparison.csv", index=False)
    (results / "comparison.json").write_text(json.dumps(json_safe(rows), indent=2) + "\n")
    header = "| " + " | ".join(comparison.columns) + " |\n|" + "---|" * len(comparison.columns) + "\n"
    body = "".join("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
                   for row in comparison.itertuples(index=False))
    (results / "comparison.md").write_text(header + body)
    print(comparison.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return comparison


if __name__ == "__main__":
    main()
