"""How fast the transformers backend labels real pairs on this machine, by batch size.

Run: .venv/bin/python benchmarks/labeling_speed.py [--pairs 16] [--batch-sizes 1,4,8]
Writes benchmarks/results/labeling_speed.json and prints a Markdown table for benchmarks/README.md.
Each configuration labels the same HH-RLHF pairs in both orders (2 prompts per pair) after one
warm-up batch; the model loads once. Timings are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

import rlaif
from rlaif.labeler import build_prompts

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL)
    parser.add_argument("--out", default=str(HERE / "results" / "labeling_speed.json"))
    args = parser.parse_args(argv)

    if DATA.exists():
        pairs, source = rlaif.load_pairs(DATA, "hh-rlhf", limit=args.pairs), "hh-rlhf harmless-base dev"
    else:
        pairs, source = rlaif.load_pairs(None, "examples", limit=args.pairs), "rlaif examples"
    template = rlaif.PromptTemplate("harmless")
    started = time.perf_counter()
    backend = rlaif.TransformersBackend.from_pretrained(args.model)
    load_seconds = time.perf_counter() - started
    prompts = [p for pair in pairs for p in build_prompts(pair, template, backend, chat_template=True)]
    tokens = sum(len(ids) for ids in backend._encode(prompts))
    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        backend.batch_size = batch_size
        backend.label_logprobs(prompts[:batch_size], template.labels)  # warm-up
        started = time.perf_counter()
        backend.label_logprobs(prompts, template.labels)
        seconds = time.perf_counter() - started
        results.append({"batch_size": batch_size, "seconds": round(seconds, 2),
                        "pairs_per_second": round(len(pairs) / seconds, 3),
                        "prompt_tokens_per_second": round(tokens / seconds, 1)})
        print(results[-1], flush=True)
    report = {
        "model": args.model, "data": source, "pairs": len(pairs), "prompts": len(prompts),
        "mean_prompt_tokens": round(tokens / len(prompts), 1), "model_load_seconds": round(load_seconds, 1),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "date": time.strftime("%Y-%m-%d"), "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['pairs']} pairs, {report['mean_prompt_tokens']} tokens per prompt, "
          f"{report['torch_threads']} threads, model load {report['model_load_seconds']} s, "
          f"peak RSS {report['peak_rss_mib']} MiB\n")
    print("| batch size | seconds | pairs/s | prompt tokens/s |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['batch_size']} | {r['seconds']} | {r['pairs_per_second']} | {r['prompt_tokens_per_second']} |")


if __name__ == "__main__":
    main()
