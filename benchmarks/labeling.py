"""Labeling speed: rlaif against what users would do instead, on the same machine, model, pairs and prompts.

Run: .venv/bin/python benchmarks/labeling.py --pairs 200 --json benchmarks/results/labeling.json

Methods, each labeling the same pairs in both orders from the same prompt texts:
  rlaif     ``label_pairs`` with the transformers backend as shipped (shared-prefix caches,
            token-capped batches, output layer on read positions only), end to end.
  naive     the loop a researcher writes first: one prompt at a time, ``model(ids).logits``
            (full [1, seq, vocab] logits) under ``torch.no_grad``, log-softmax of the last row.
  generate  generate-and-parse judging: greedy ``model.generate`` of a short answer per prompt,
            the first "1" or "2" in the text is the label (no probabilities).
  vllm      vLLM's engine on the same prompts (``allowed_token_ids``), when ``import vllm`` works.
  rlaif-vllm   ``label_pairs`` with rlaif's vLLM backend (exact label reads, prefix caching).
  rlaif-http   ``label_pairs`` with rlaif's OpenAI-compatible backend against ``--server-url``
               (e.g. ``vllm serve``), requests in flight at once.

Also measured in the same run: the machine's matrix-multiply FLOP/s (a large fp32 matmul) and,
per method, the roofline ratio: the model FLOPs the job needs (2 x non-embedding parameters x
tokens, a prefix shared by several prompts counted once, plus the output layer at the read
positions) per second of the method, over the matmul FLOP/s. Peak memory is the process's peak
resident set while the method ran (Linux; the model's weights included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

import rlaif
from rlaif.backends.shared_prefix import prefix_tree
from rlaif.prompting import PairPrompts, Prompting

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def matmul_flops(size: int = 4096, repeats: int = 5, dtype=torch.float32) -> float:
    """Best-of-``repeats`` FLOP/s of one size x size matmul: what this machine's cores can do."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


class PeakMemory:
    """Peak resident set of this process while the block runs (Linux: VmHWM, reset on entry)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        status = Path("/proc/self/status")
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        self.mib = round(int(match.group(1)) / 1024) if match else None


def needed_tokens(sequences: list[list[int]]) -> int:
    """Tokens the job must run at least: every prompt's tokens, a prefix shared by several counted once."""
    tree = prefix_tree(sequences, [1] * len(sequences), min_shared=1)

    def count(node, start):
        return (node.end - start) + sum(len(sequences[i]) - node.end for i in node.leaves) \
            + sum(count(child, node.end) for child in node.children)
    return count(tree, 0)


def label_ids(backend, prompts: list[str], labels) -> list[int]:
    """The token id of each one-token label after these prompts (the fast path's condition)."""
    conts = backend.continuations(prompts[0], labels)
    if any(len(c.label_ids) != 1 for c in conts):
        raise SystemExit("the benchmark needs one-token labels")
    return [c.label_ids[0] for c in conts]


@torch.no_grad()
def run_naive(backend, encoded: list[list[int]], ids: list[int]) -> np.ndarray:
    out = []
    for tokens in encoded:
        logits = backend.model(torch.tensor([tokens])).logits  # [1, seq, vocab], as the textbook loop does
        out.append(torch.log_softmax(logits[0, -1].float(), -1)[ids].numpy())
    return np.array(out)


@torch.no_grad()
def run_generate(backend, encoded: list[list[int]], new_tokens: int) -> list[str]:
    texts = []
    for tokens in encoded:
        output = backend.model.generate(torch.tensor([tokens]), attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
                                        max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None,
                                        top_k=None, pad_token_id=backend.pad_id)
        texts.append(backend.tokenizer.decode(output[0, len(tokens):], skip_special_tokens=True))
    return texts


def vllm_cpu_options() -> dict:
    """vLLM engine settings for this CPU (see ../shared/MODELS.md); none on a GPU machine."""
    if torch.cuda.is_available():
        return {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
    return dict(distributed_executor_backend="uni", enforce_eager=True, kv_cache_memory_bytes=2 * 10**9)


def frame_logprobs(frame) -> np.ndarray:
    """The label log-probs of a labels table, one row per prompt (first order, then swapped, per pair)."""
    return np.array([row for pair in frame.itertuples()
                     for row in (pair.logprobs_first_order, pair.logprobs_swapped_order)], dtype=float)


def run_vllm(model_folder: str, prompts: list[str], ids: list[int]) -> tuple[np.ndarray, float]:
    """vLLM's engine, prefix caching on, the next token restricted to the labels; and its start time.

    vLLM reports raw (full-vocabulary) log-probs of the top 20 tokens and the sampled one, so a
    label outside those comes back missing (NaN): counted, not guessed."""
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=model_folder, dtype="float32", enable_prefix_caching=True, max_model_len=4096, **vllm_cpu_options())
    start_seconds = time.perf_counter() - started
    params = SamplingParams(max_tokens=1, logprobs=20, allowed_token_ids=ids, temperature=0)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    nan = type("Missing", (), {"logprob": float("nan")})()
    return np.array([[out.outputs[0].logprobs[0].get(i, nan).logprob for i in ids] for out in outputs]), start_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="real HH-RLHF harmless pairs (both orders each)")
    parser.add_argument("--json", default=str(HERE / "results" / "labeling.json"), help="where the results go")
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL)
    parser.add_argument("--shots", type=int, default=2, help="few-shot exemplars per prompt (the paper's 'Base 2-shot')")
    parser.add_argument("--generate-tokens", type=int, default=16, help="new tokens per generate-and-parse answer")
    parser.add_argument("--methods", default="rlaif,naive,generate,vllm")
    parser.add_argument("--vllm-model-folder", help="Hugging Face folder of the model for vLLM")
    parser.add_argument("--server-url", help="rlaif-http: an OpenAI-compatible server serving --model")
    parser.add_argument("--served-model", help="rlaif-http: the name the server serves (default --model)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")

    pairs = rlaif.load_pairs(DATA, "hh-rlhf", limit=args.pairs)
    template = rlaif.PromptTemplate("harmless")
    prompting = Prompting(shots=args.shots)
    started = time.perf_counter()
    backend = rlaif.TransformersBackend.from_pretrained(args.model)
    load_seconds = time.perf_counter() - started
    builder = PairPrompts(template, backend, True, prompting)
    prompts = [builder.label_prompt(*entry[2:]) for pair in pairs for entry in builder.first_step(pair)]
    encoded = backend._encode(prompts)
    ids = label_ids(backend, prompts, template.labels)
    prompt_tokens = sum(map(len, encoded))
    needed = needed_tokens(encoded)
    config = backend.model.config
    embedding = config.vocab_size * config.hidden_size
    parameters = sum(p.numel() for p in backend.model.parameters())
    body = parameters - embedding * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    needed_flops = 2 * body * needed + 2 * embedding * len(prompts)
    print(f"{len(pairs)} pairs, {len(prompts)} prompts, {prompt_tokens} prompt tokens "
          f"({prompt_tokens / len(prompts):.0f} per prompt), {needed} needed with shared prefixes once", flush=True)
    peak = matmul_flops()
    print(f"matmul: {peak / 1e9:.1f} GFLOP/s", flush=True)

    results, reference = {}, None
    for method in methods:
        if method == "rlaif-http" and not args.server_url:
            results[method] = {"skipped": "--server-url not given"}
            continue
        if method in ("vllm", "rlaif-vllm"):
            try:
                import vllm  # noqa: F401
            except ImportError:
                results[method] = {"skipped": "vllm is not installed in this environment"}
                print("vllm: skipped (not installed)", flush=True)
                continue
            if method == "vllm" and not args.vllm_model_folder:
                results[method] = {"skipped": "--vllm-model-folder not given"}
                continue
        extra = {}
        with PeakMemory() as memory:
            started = time.perf_counter()
            if method == "rlaif":
                backend.stats = dict.fromkeys(backend.stats, 0)
                logprobs = frame_logprobs(rlaif.label_pairs(pairs, backend, template, chat_template=True,
                                                            prompting=prompting, progress=False))
                extra = {"tokens_run": backend.stats["tokens"], "padding_run": backend.stats["padding"],
                         "forward_passes": backend.stats["passes"]}
            elif method == "rlaif-vllm":
                from rlaif.backends.vllm_backend import VLLMBackend

                engine = VLLMBackend.from_pretrained(args.model, dtype="float32", max_model_len=4096, **vllm_cpu_options())
                start_seconds = time.perf_counter() - started
                started += start_seconds  # engine start is reported apart from labeling time
                logprobs = frame_logprobs(rlaif.label_pairs(pairs, engine, template, chat_template=True,
                                                            prompting=prompting, progress=False))
                extra = {"engine_start_seconds": round(start_seconds, 1)}
            elif method == "rlaif-http":
                from rlaif.backends.http_backend import OpenAICompatibleBackend

                client = OpenAICompatibleBackend(args.server_url, args.served_model or args.model, tokenizer=args.model)
                logprobs = frame_logprobs(rlaif.label_pairs(pairs, client, template, chat_template=True,
                                                            prompting=prompting, progress=False))
                extra = {"requests": client.stats["requests"], "retries": client.stats["retries"],
                         "note": "peak RSS is this client's; the server runs in its own process"}
            elif method == "naive":
                logprobs = run_naive(backend, encoded, ids)
            elif method == "generate":
                texts = run_generate(backend, encoded, args.generate_tokens)
                found = [re.search(r"[12]", text) for text in texts]
                logprobs = None
                extra = {"new_tokens": args.generate_tokens, "unparsed": sum(m is None for m in found),
                         "choices": [int(m.group()) if m else None for m in found], "answers_head": texts[:5]}
            elif method == "vllm":
                logprobs, start_seconds = run_vllm(args.vllm_model_folder, prompts, ids)
                started += start_seconds  # engine start is reported apart from labeling time
                extra = {"engine_start_seconds": round(start_seconds, 1),
                         "missing_label_logprobs": int(np.isnan(logprobs).sum())}
            seconds = time.perf_counter() - started
        result = {"seconds": round(seconds, 2), "pairs_per_s": round(len(pairs) / seconds, 4),
                  "prompt_tokens_per_s": round(prompt_tokens / seconds, 1),
                  "roofline_ratio": round(needed_flops / seconds / peak, 3), "peak_rss_mib": memory.mib, **extra}
        if logprobs is not None:
            if reference is None:
                reference = logprobs
            result["max_abs_logprob_diff_vs_first"] = float(np.nanmax(np.abs(logprobs - reference)))
        results[method] = result
        print(method, {k: v for k, v in result.items() if k not in ("choices", "answers_head")}, flush=True)

    if "generate" in results and reference is not None:
        argmax = (reference.argmax(axis=1) + 1).tolist()
        choices = results["generate"].pop("choices")
        results["generate"]["agrees_with_logprob_argmax"] = round(
            float(np.mean([c == a for c, a in zip(choices, argmax)])), 3)
    speed = {m: r["pairs_per_s"] for m, r in results.items() if "pairs_per_s" in r}
    report = {
        "model": args.model, "data": "hh-rlhf harmless-base dev (first pairs)", "pairs": len(pairs),
        "prompts": len(prompts), "template": "harmless/base", "chat_template": True, "shots": args.shots,
        "prompt_tokens": prompt_tokens, "needed_tokens": needed, "parameters": parameters,
        "non_embedding_parameters": body, "matmul_flops_per_s": peak, "model_load_seconds": round(load_seconds, 1),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "date": time.strftime("%Y-%m-%d"),
        "pairs_per_s": speed, "methods": results,
    }
    if "rlaif" in speed:
        report["roofline_ratio"] = results["rlaif"]["roofline_ratio"]
        for other in ("naive", "generate", "vllm", "rlaif-vllm", "rlaif-http"):
            if other in speed:
                report[f"speedup_vs_{other}"] = round(speed["rlaif"] / speed[other], 2)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| method | pairs/s | prompt tokens/s | roofline ratio | peak RSS MiB |\n|---|---|---|---|---|")
    for method, r in results.items():
        if "pairs_per_s" in r:
            print(f"| {method} | {r['pairs_per_s']} | {r['prompt_tokens_per_s']} | {r['roofline_ratio']} | {r['peak_rss_mib']} |")
    print({k: v for k, v in report.items() if k.startswith("speedup") or k == "roofline_ratio"})


if __name__ == "__main__":
    main()
