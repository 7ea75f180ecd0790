"""CPU options for the transformers backend: threads, bf16, dynamic int8 -- speed and how far labels move.

Run: .venv/bin/python benchmarks/cpu_options.py --pairs 48 --json benchmarks/results/cpu_options.json

Each option labels the same HH-RLHF harmless pairs (2-shot, chat template, both orders) with
``label_pairs`` after a warm-up step, and is compared with the default (fp32, all cores): seconds,
pairs/s, the largest change of a soft label p, and how many AI choices flip. An option is worth a
default only if it is faster and keeps every p within ``--tolerance`` of fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import rlaif
from rlaif.prompting import Prompting

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--json", default=str(HERE / "results" / "cpu_options.json"))
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest change of p an option may make")
    args = parser.parse_args(argv)

    pairs = rlaif.load_pairs(DATA, "hh-rlhf", limit=args.pairs + 4)
    warmup, pairs = pairs[:4], pairs[4:]
    template = rlaif.PromptTemplate("harmless")
    base = rlaif.TransformersBackend.from_pretrained(args.model)
    cores = torch.get_num_threads()

    def backend_with(model):
        return rlaif.TransformersBackend(model, base.tokenizer, name=base.name, weights=base.weights)

    def quantized():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's notice that eager quantization moves to torchao
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.model), {torch.nn.Linear}, dtype=torch.qint8)

    options = {
        f"fp32, {cores} threads (default)": (lambda: base, cores),
        "fp32, 1 thread": (lambda: backend_with(base.model), 1),
        f"bf16, {cores} threads": (lambda: backend_with(copy.deepcopy(base.model).to(torch.bfloat16)), cores),
        f"int8 dynamic (linear layers), {cores} threads": (lambda: backend_with(quantized()), cores),
    }
    results, reference = [], None
    for name, (make, threads) in options.items():
        backend = make()
        torch.set_num_threads(threads)
        run = lambda ps: rlaif.label_pairs(ps, backend, template, chat_template=True,  # noqa: E731
                                           prompting=Prompting(shots=2), progress=False)
        run(warmup)
        started = time.perf_counter()
        frame = run(pairs)
        seconds = time.perf_counter() - started
        p = frame["p"].to_numpy(dtype=float)
        if reference is None:
            reference = p
        row = {"option": name, "seconds": round(seconds, 2), "pairs_per_s": round(len(pairs) / seconds, 3),
               "max_abs_p_change": float(np.abs(p - reference).max()),
               "choice_flips": int(((p > 0.5) != (reference > 0.5)).sum())}
        row["within_tolerance"] = row["max_abs_p_change"] <= args.tolerance
        results.append(row)
        print(row, flush=True)
    torch.set_num_threads(cores)
    report = {"model": args.model, "pairs": len(pairs), "tolerance": args.tolerance, "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "date": time.strftime("%Y-%m-%d"),
              "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| option | pairs/s | speed vs default | max change of p | AI choices flipped |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['option']} | {r['pairs_per_s']} | {r['pairs_per_s'] / results[0]['pairs_per_s']:.2f}x "
              f"| {r['max_abs_p_change']:.4f} | {r['choice_flips']} of {len(pairs)} |")


if __name__ == "__main__":
    main()
