"""CPU options for the transformers backend: precision, threads, dynamic int8 -- speed and how far labels move.

Run: .venv/bin/python benchmarks/cpu_options.py --pairs 48 --json benchmarks/results/cpu_options.json
     .venv/bin/python benchmarks/cpu_options.py --model qwen2.5-coder-1.5b --data llmbar --shots 0 \\
         --options fp32,mixed,bf16-body,bf16 --json benchmarks/results/cpu_options_1.5b.json

Each option labels the same pairs (chat template, both orders) with ``label_pairs`` after a
warm-up step, and is compared with fp32 (all cores): seconds, pairs/s, and how far its soft labels
are from fp32's (``labeling.p_vs_reference``: the largest change, the share within 0.01, new exact
ties, AI choices flipped where fp32 is confident, agreement with people and its paired difference).
Options:
  fp32        the exact path (the reference)
  mixed       the decoder's linear layers in bf16, residual stream, norms, attention, final norm
              and output layer in fp32 (``rlaif.backends.cpu_precision``)
  bf16-body   the whole decoder in bf16 (residual stream and attention too), the final norm and the
              output layer in fp32 on the bf16 hidden state
  bf16        everything in bf16, logits read in bf16 (``--dtype bfloat16``)
  fp32-1thread, int8   fp32 on one core; dynamic int8 linear layers (torch.ao)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch
from labeling import DATASETS, cpu_name, human_choices, load_benchmark_pairs, p_vs_reference
from torch import nn

import rlaif
from rlaif.backends.cpu_precision import bf16_matrix_units, to_mixed_precision
from rlaif.prompting import Prompting

HERE = Path(__file__).resolve().parent


class Fp32Head(nn.Module):
    """The final norm in fp32 on a bf16 body's hidden state (bf16-body option)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm.float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden.float())


def bf16_body(model: nn.Module) -> nn.Module:
    """The decoder in bf16, its final norm and the output layer (untied, fp32) reading in fp32."""
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    head.weight = nn.Parameter(model.get_output_embeddings().weight.detach().clone(), requires_grad=False)
    model = model.to(torch.bfloat16)
    model.base_model.norm = Fp32Head(model.base_model.norm)
    model.set_output_embeddings(head)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--data", default="hh-rlhf", choices=sorted(DATASETS))
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--json", default=str(HERE / "results" / "cpu_options.json"))
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL)
    parser.add_argument("--options", default="fp32,mixed,bf16-body,bf16,fp32-1thread,int8")
    args = parser.parse_args(argv)

    pairs = load_benchmark_pairs(args.data, args.pairs + 4)
    warmup, pairs = pairs[:4], pairs[4:]
    human = human_choices(pairs)
    template = rlaif.PromptTemplate(DATASETS[args.data][1])
    base = rlaif.TransformersBackend.from_pretrained(args.model, dtype="float32")
    cores = torch.get_num_threads()

    def backend_with(model):
        return rlaif.TransformersBackend(model, base.tokenizer, name=base.name, weights=base.weights)

    def quantized():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's notice that eager quantization moves to torchao
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.model), {torch.nn.Linear},
                                                          dtype=torch.qint8)

    makers = {
        "fp32": (lambda: base, cores),
        "mixed": (lambda: backend_with(to_mixed_precision(copy.deepcopy(base.model))), cores),
        "bf16-body": (lambda: backend_with(bf16_body(copy.deepcopy(base.model))), cores),
        "bf16": (lambda: backend_with(copy.deepcopy(base.model).to(torch.bfloat16)), cores),
        "fp32-1thread": (lambda: backend_with(base.model), 1),
        "int8": (lambda: backend_with(quantized()), cores),
    }
    options = args.options.split(",")
    if options[0] != "fp32" or any(o not in makers for o in options):
        raise SystemExit(f"--options: fp32 first, then any of {sorted(makers)}")
    results, reference = [], None
    for name in options:
        make, threads = makers[name]
        backend = make()
        torch.set_num_threads(threads)
        def run(ps, backend):
            return rlaif.label_pairs(ps, backend, template, chat_template=True,
                                     prompting=Prompting(shots=args.shots), progress=False)
        run(warmup, backend)
        started = time.perf_counter()
        frame = run(pairs, backend)
        seconds = time.perf_counter() - started
        p = frame["p"].to_numpy(dtype=float)
        if reference is None:
            reference = p
        row = {"option": name, "threads": threads, "seconds": round(seconds, 2),
               "pairs_per_s": round(len(pairs) / seconds, 4), **p_vs_reference(p, reference, human)}
        results.append(row)
        print(row, flush=True)
        del backend
    torch.set_num_threads(cores)
    report = {"model": args.model, "data": args.data, "pairs": len(pairs), "shots": args.shots,
              "cpu": cpu_name(), "bf16_matrix_units": bf16_matrix_units(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "date": time.strftime("%Y-%m-%d"),
              "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['cpu']}, {args.model}, {len(pairs)} {args.data} pairs\n"
          "| option | pairs/s | speed vs fp32 | max change of p | within 0.01 | new ties | confident flips "
          "| agreement (fp32) | paired difference [95%] |\n|---|---|---|---|---|---|---|---|---|")
    for r in results:
        d = r["agreement_difference"]
        print(f"| {r['option']} | {r['pairs_per_s']} | {r['pairs_per_s'] / results[0]['pairs_per_s']:.2f}x "
              f"| {r['max_abs_diff']:.4f} | {r['share_within_0_01']:.1%} | {r['new_ties']} | {r['confident_flips']} "
              f"| {r['agreement']['this']:.3f} ({r['agreement']['reference']:.3f}) "
              f"| {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")


if __name__ == "__main__":
    main()
