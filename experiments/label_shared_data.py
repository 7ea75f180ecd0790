"""Label every shared human-preference data set with its default task and compare with the humans.

    python experiments/label_shared_data.py                       # 20 pairs per set, default model
    python experiments/label_shared_data.py --limit 200 --device cuda
    python experiments/label_shared_data.py --no-chat-template --preamble detailed --results results/plain

For each data set below that exists under --data-root, the first --limit pairs are
labeled in both orders and written to RESULTS/<name>.jsonl as they finish (a rerun
with the same settings resumes and skips what is done). Then RESULTS/summary.csv and
RESULTS/summary.json get one row per set, and RESULTS/config.json the settings used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

import rlaif
from rlaif.analysis.report import json_safe

# (name, loader format, path under --data-root, template task). Each HHH subset gets the task
# that matches what its human labels judge: harmlessness data with the helpful question would
# reward compliance with harmful requests.
DATASETS = [
    ("hh-rlhf-harmless", "hh-rlhf", "hh-rlhf/harmless-base/dev.jsonl.gz", "harmless"),
    ("hhh-harmless", "hhh", "hhh_alignment/harmless/task.json", "harmless"),
    ("hhh-helpful", "hhh", "hhh_alignment/helpful/task.json", "helpful"),
    ("hhh-honest", "hhh", "hhh_alignment/honest/task.json", "helpful"),
    ("hhh-other", "hhh", "hhh_alignment/other/task.json", "helpful"),
    ("llmbar-natural", "llmbar", "llmbar/LLMBar_Natural", "instruction"),
    ("prd-lfqa", "prd", "prd_lfqa/experts_pairwise_human_preferences.jsonl", "instruction"),
]
SUMMARY_COLUMNS = ["dataset", "format", "task", "pairs", "pairs_scored", "alignment",
                   "same_position", "mean_candidate_mass", "seconds"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data", help="folder holding the shared data sets")
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL, help="embedded name, local folder, .gguf or hub name")
    parser.add_argument("--limit", type=int, default=20, help="pairs per data set (the first N in file order)")
    parser.add_argument("--preamble", default="base", choices=["base", "detailed"])
    parser.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=True,
                        help="wrap prompts in the model's chat template (default: on)")
    parser.add_argument("--results", default="results/label_shared_data", help="output folder")
    parser.add_argument("--datasets", default=",".join(name for name, *_ in DATASETS),
                        help="comma-separated subset of the data set names below")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "mixed"],
                        help="default: mixed on a CPU with bf16 matrix units (labels read in fp32), else float32")
    parser.add_argument("--batch-size", type=int, default=64, help="most prompts per forward pass")
    parser.add_argument("--max-batch-tokens", type=int, default=4096, help="most tokens per forward pass")
    parser.add_argument("--fresh", action="store_true", help="discard earlier labels instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None, backend=None) -> pd.DataFrame:
    args = parse_args(argv)
    data_root, results = Path(args.data_root), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)

    # ---- which data sets are here
    available = []
    chosen = args.datasets.split(",")
    unknown = set(chosen) - {name for name, *_ in DATASETS}
    if unknown:
        raise SystemExit(f"unknown data set(s) {sorted(unknown)}; known: {[name for name, *_ in DATASETS]}")
    for name, fmt, relative, task in DATASETS:
        if name not in chosen:
            continue
        path = data_root / relative
        if path.exists():
            available.append((name, fmt, path, task))
        else:
            print(f"note: skipping {name}: {path} not found")

    # ---- the labeler: loaded once, reused for every set (tests pass a fake one in)
    if backend is None and available:
        from rlaif import TransformersBackend

        if args.device is None:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = TransformersBackend.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                                      batch_size=args.batch_size,
                                                      max_batch_tokens=args.max_batch_tokens)

    # ---- the resolved config, written before labeling so a crashed run still says what it was
    config = {
        **vars(args),
        "rlaif_version": rlaif.__version__,
        "backend": backend.fingerprint() if backend is not None else None,
        "datasets": [{"dataset": name, "format": fmt, "path": str(path), "task": task}
                     for name, fmt, path, task in available],
        "skipped": [name for name, *_ in DATASETS if name in chosen and name not in {n for n, *_ in available}],
        "argv": sys.argv if argv is None else list(argv),
    }
    (results / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")

    # ---- label each set, resumably, and summarize it
    rows = []
    for name, fmt, path, task in available:
        template = rlaif.PromptTemplate(task, args.preamble)
        pairs = rlaif.load_pairs(path, fmt, limit=args.limit)
        out = results / f"{name}.jsonl"
        print(f"{name}: {len(pairs)} pairs from {path}, task {task}, labels -> {out}")
        started = time.time()
        labels = rlaif.label_pairs(pairs, backend, template, chat_template=args.chat_template, out=out,
                                   fresh=args.fresh, progress=not args.quiet)
        seconds = time.time() - started
        summary = rlaif.summarize(labels)
        rows.append({
            "dataset": name,
            "format": fmt,
            "task": task,
            "pairs": summary["pairs"],
            "pairs_scored": summary["pairs_scored"],
            "alignment": summary["alignment"],
            "same_position": summary["position_bias"]["same_position_both_orders"],
            "mean_candidate_mass": summary["mean_candidate_mass"],
            "seconds": round(seconds, 3),
        })

    # ---- write and print the summary
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table.to_csv(results / "summary.csv", index=False)
    (results / "summary.json").write_text(json.dumps(json_safe(rows), indent=2) + "\n")
    print()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}") if rows else "no data sets found")
    print(f"\nwrote {results / 'summary.csv'}, {results / 'summary.json'} and {results / 'config.json'}")
    return table


if __name__ == "__main__":
    main()
