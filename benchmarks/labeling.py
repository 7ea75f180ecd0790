"""Labeling speed: rlaif against what users would do instead, on the same machine, model, pairs and prompts.

Run: .venv/bin/python benchmarks/labeling.py --pairs 200 --json benchmarks/results/labeling.json
     .venv/bin/python benchmarks/labeling.py --model qwen2.5-coder-1.5b --data llmbar --shots 0 --pairs 200

Methods, each labeling the same pairs in both orders from the same prompt texts:
  rlaif     ``label_pairs`` with the transformers backend as shipped (shared-prefix caches,
            token-capped batches, output layer on read positions only, the default precision:
            bf16 linear layers with the labels read in fp32 on a CPU with bf16 matrix units),
            end to end.
  rlaif_fp32   the same in fp32 (``dtype="float32"``): the reference the default's labels are
            compared with (``p_vs_fp32``).
  naive     the loop a researcher writes first: one prompt at a time, ``model(ids).logits``
            (full [1, seq, vocab] logits) under ``torch.no_grad``, log-softmax of the last row.
  generate  generate-and-parse judging: greedy ``model.generate`` of a short answer per prompt,
            the first "1" or "2" in the text is the label (no probabilities).
  llamacpp  what a CPU user would pick for a GGUF model: llama.cpp (``llama-cpp-python``) on the same
            .gguf file and the same token ids, one prompt at a time, reusing the key/value cache of
            the prefix it shares with the previous prompt (as llama.cpp's own prompt cache does), the
            exact next-token log-probs read from its logits; when ``llama_cpp`` is installed.
  vllm      vLLM's engine on the same prompts (``allowed_token_ids``), when ``import vllm`` works.
  rlaif-vllm   ``label_pairs`` with rlaif's vLLM backend (exact label reads, prefix caching).
  rlaif-http   ``label_pairs`` with rlaif's OpenAI-compatible backend against ``--server-url``
               (e.g. ``vllm serve``), requests in flight at once.

Also measured in the same run: the machine's matrix-multiply FLOP/s in fp32 and in bf16 (a large
matmul each) and, per method, the roofline ratio: the model FLOPs the job needs (2 x non-embedding
parameters x tokens, a prefix shared by several prompts counted once, plus the output layer at the
read positions) per second of the method, over the fastest of the two peaks (``roofline_ratio``)
and over the fp32 peak (``roofline_ratio_fp32_peak``). Peak memory is the process's peak resident
set while the method ran (Linux; the model's weights included).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

import rlaif
from rlaif.backends.cpu_precision import bf16_matrix_units, default_dtype, to_mixed_precision
from rlaif.backends.shared_prefix import prefix_tree
from rlaif.metrics import paired_difference_ci
from rlaif.prompting import PairPrompts, Prompting
from rlaif.soft_labels import choice, swap_average

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
#: Benchmark jobs: (files and formats, read in order until N pairs; the task template).
DATASETS = {
    "hh-rlhf": ([(SHARED / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz", "hh-rlhf")], "harmless"),
    # LLMBar Natural first (where a 1.5B labeler reads content), then the adversarial sets
    "llmbar": ([(SHARED / "llmbar" / name, "llmbar") for name in (
        "LLMBar_Natural", "LLMBar_Adversarial_Neighbor", "LLMBar_Adversarial_GPTInst",
        "LLMBar_Adversarial_GPTOut", "LLMBar_Adversarial_Manual")], "instruction"),
}


def load_benchmark_pairs(name: str, limit: int) -> list:
    """The first ``limit`` pairs of a benchmark job's files, in order."""
    pairs = []
    for path, fmt in DATASETS[name][0]:
        if len(pairs) < limit:
            pairs.extend(rlaif.load_pairs(path, fmt, limit=limit - len(pairs)))
    return pairs


def human_choices(pairs) -> np.ndarray:
    """Each pair's human label (1, 2, or TIE), -1 where it has none."""
    return np.array([pair.human_choice if pair.human_choice is not None else -1 for pair in pairs])


def p_vs_reference(p: np.ndarray, reference: np.ndarray, human: np.ndarray | None = None) -> dict:
    """How far soft labels ``p`` are from ``reference`` (the fp32 path's): the largest change, the
    share of pairs within 0.01, exact ties (p == 0.5) the reference does not have, AI choices
    flipped where the reference is confident (|p_ref - 0.5| > 0.02); and, with human labels, both
    agreements and their paired difference."""
    p, reference = np.asarray(p, dtype=float), np.asarray(reference, dtype=float)
    diff = np.abs(p - reference)
    out = {"max_abs_diff": round(float(diff.max()), 5), "share_within_0_01": round(float(np.mean(diff <= 0.01)), 4),
           "new_ties": int(np.sum((p == 0.5) & (reference != 0.5))),
           "confident_flips": int(np.sum((np.abs(reference - 0.5) > 0.02) & ((p > 0.5) != (reference > 0.5)))),
           "choice_changes": int(np.sum(np.sign(p - 0.5) != np.sign(reference - 0.5)))}
    if human is not None:
        labeled = np.isin(human, (1, 2))
        right = lambda q: choice(q)[labeled] == human[labeled]  # noqa: E731
        out["agreement"] = {"this": round(float(right(p).mean()), 4),
                            "reference": round(float(right(reference).mean()), 4),
                            "pairs": int(labeled.sum())}
        out["agreement_difference"] = paired_difference_ci(right(p), right(reference))
    return out


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
        output = backend.model.generate(torch.tensor([tokens]),
                                        attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
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


def pair_p(logprobs: np.ndarray, asks_more_harmful: bool) -> np.ndarray:
    """Swap-averaged P(response 1 preferred) from per-prompt log-probs (first order, then swapped, per pair)."""
    return swap_average(logprobs[0::2], logprobs[1::2], asks_more_harmful)["p"]


def run_llamacpp(gguf: str, encoded: list[list[int]], ids: list[int]) -> np.ndarray:
    """llama.cpp on the same token ids, one prompt at a time; the cache of the prefix shared with the
    previous prompt is kept (what its prompt cache does), the rest evaluated; exact log-probs from the
    last position's logits."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=max(map(len, encoded)) + 8, n_threads=torch.get_num_threads(),
                          n_batch=512, logits_all=False, verbose=False)
    out, previous = [], []
    for tokens in encoded:
        keep = 0
        while keep < min(len(previous), len(tokens) - 1) and previous[keep] == tokens[keep]:
            keep += 1
        llm.n_tokens = keep  # eval drops what follows the shared prefix from the cache
        llm.eval(tokens[keep:])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        logits = logits.astype(np.float64)
        out.append(logits[ids] - logsumexp(logits))
        previous = tokens
    return np.array(out)


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
    parser.add_argument("--pairs", type=int, default=200, help="real pairs (both orders each)")
    parser.add_argument("--data", default="hh-rlhf", choices=sorted(DATASETS), help="which pairs (see DATASETS)")
    parser.add_argument("--json", default=str(HERE / "results" / "labeling.json"), help="where the results go")
    parser.add_argument("--model", default=rlaif.DEFAULT_MODEL)
    parser.add_argument("--shots", type=int, default=2,
                        help="few-shot exemplars per prompt (the paper's 'Base 2-shot')")
    parser.add_argument("--generate-tokens", type=int, default=16, help="new tokens per generate-and-parse answer")
    parser.add_argument("--methods", default="rlaif,rlaif_fp32,naive,generate,llamacpp,vllm")
    parser.add_argument("--peer-pairs", type=int,
                        help="label only the first N pairs with naive, generate and llamacpp (slow peers on a large "
                             "model); rlaif is then also timed on those N pairs (rlaif_peer_pairs), and the "
                             "speedups over the peers compare the same pairs")
    parser.add_argument("--vllm-model-folder", help="Hugging Face folder of the model for vLLM")
    parser.add_argument("--server-url", help="rlaif-http: an OpenAI-compatible server serving --model")
    parser.add_argument("--served-model", help="rlaif-http: the name the server serves (default --model)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    peers = {"naive", "generate", "llamacpp"}
    if args.peer_pairs and args.peer_pairs < args.pairs and "rlaif" in methods and peers & set(methods):
        methods.insert(methods.index("rlaif"), "rlaif_peer_pairs")

    pairs = load_benchmark_pairs(args.data, args.pairs)
    template = rlaif.PromptTemplate(DATASETS[args.data][1])
    human = human_choices(pairs)
    prompting = Prompting(shots=args.shots)
    started = time.perf_counter()
    reference_backend = rlaif.TransformersBackend.from_pretrained(args.model, dtype="float32")
    load_seconds = time.perf_counter() - started
    default = default_dtype("cpu")
    # the default path's model from the same weights (no second load): what from_pretrained(model) gives
    backend = reference_backend if default == "float32" else rlaif.TransformersBackend(
        to_mixed_precision(copy.deepcopy(reference_backend.model)), reference_backend.tokenizer,
        name=reference_backend.name, source=reference_backend.source, weights=reference_backend.weights)
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
    flops_per_token, head_flops = 2 * body, 2 * embedding
    print(f"{len(pairs)} pairs, {len(prompts)} prompts, {prompt_tokens} prompt tokens "
          f"({prompt_tokens / len(prompts):.0f} per prompt), {needed} needed with shared prefixes once; "
          f"default precision {backend.precision} (bf16 matrix units: {bf16_matrix_units()})", flush=True)
    peaks = {"float32": matmul_flops(dtype=torch.float32), "bfloat16": matmul_flops(dtype=torch.bfloat16)}
    peak = max(peaks.values())
    print("matmul GFLOP/s: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks.items()), flush=True)
    peer_pairs = min(args.peer_pairs or len(pairs), len(pairs))
    peer_prompts = 2 * peer_pairs

    results, reference, p_by_method = {}, None, {}
    asks_more_harmful = template.asks_more_harmful
    for method in methods:
        if method == "rlaif-http" and not args.server_url:
            results[method] = {"skipped": "--server-url not given"}
            continue
        if method in ("vllm", "rlaif-vllm", "llamacpp"):
            module = "llama_cpp" if method == "llamacpp" else "vllm"
            try:
                __import__(module)
            except ImportError:
                results[method] = {"skipped": f"{module} is not installed in this environment"}
                print(f"{method}: skipped ({module} not installed)", flush=True)
                continue
            if method == "vllm" and not args.vllm_model_folder:
                results[method] = {"skipped": "--vllm-model-folder not given"}
                continue
        extra, n_pairs = {}, len(pairs)
        with PeakMemory() as memory:
            started = time.perf_counter()
            if method in ("rlaif", "rlaif_fp32", "rlaif_peer_pairs"):
                engine = reference_backend if method == "rlaif_fp32" else backend
                engine.stats = dict.fromkeys(engine.stats, 0)
                n_pairs = peer_pairs if method == "rlaif_peer_pairs" else len(pairs)
                logprobs = frame_logprobs(rlaif.label_pairs(pairs[:n_pairs], engine, template, chat_template=True,
                                                            prompting=prompting, progress=False))
                extra = {"precision": engine.precision, "tokens_run": engine.stats["tokens"],
                         "padding_run": engine.stats["padding"], "forward_passes": engine.stats["passes"]}
            elif method == "rlaif-vllm":
                from rlaif.backends.vllm_backend import VLLMBackend

                engine = VLLMBackend.from_pretrained(args.model, dtype="float32", max_model_len=4096,
                                                     **vllm_cpu_options())
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
                n_pairs = peer_pairs
                logprobs = run_naive(reference_backend, encoded[:peer_prompts], ids)
            elif method == "generate":
                n_pairs = peer_pairs
                texts = run_generate(reference_backend, encoded[:peer_prompts], args.generate_tokens)
                found = [re.search(r"[12]", text) for text in texts]
                logprobs = None
                extra = {"new_tokens": args.generate_tokens, "unparsed": sum(m is None for m in found),
                         "choices": [int(m.group()) if m else None for m in found], "answers_head": texts[:5]}
            elif method == "llamacpp":
                n_pairs = peer_pairs
                gguf = rlaif.backends.models.resolve_model(args.model)
                if not gguf.gguf_file:
                    results[method] = {"skipped": f"{args.model} is not a .gguf model"}
                    continue
                logprobs = run_llamacpp(str(Path(gguf.path) / gguf.gguf_file), encoded[:peer_prompts], ids)
                extra = {"weights": "the GGUF file's own quantized blocks (llama.cpp computes on them)"}
            elif method == "vllm":
                logprobs, start_seconds = run_vllm(args.vllm_model_folder, prompts, ids)
                started += start_seconds  # engine start is reported apart from labeling time
                extra = {"engine_start_seconds": round(start_seconds, 1),
                         "missing_label_logprobs": int(np.isnan(logprobs).sum())}
            seconds = time.perf_counter() - started
        result = {"pairs": n_pairs, "seconds": round(seconds, 2), "pairs_per_s": round(n_pairs / seconds, 4),
                  "prompt_tokens_per_s": round(sum(map(len, encoded[:2 * n_pairs])) / seconds, 1),
                  "peak_rss_mib": memory.mib, **extra}
        # the FLOPs this method's pairs need (the peers label only the first --peer-pairs)
        needed_flops = flops_per_token * needed_tokens(encoded[:2 * n_pairs]) + head_flops * 2 * n_pairs
        result["roofline_ratio"] = round(needed_flops / seconds / peak, 3)
        result["roofline_ratio_fp32_peak"] = round(needed_flops / seconds / peaks["float32"], 3)
        if logprobs is not None:
            if reference is None:
                reference = logprobs
            rows = min(len(logprobs), len(reference))
            result["max_abs_logprob_diff_vs_first"] = float(np.nanmax(np.abs(logprobs[:rows] - reference[:rows])))
            p_by_method[method] = pair_p(logprobs, asks_more_harmful)
        results[method] = result
        print(method, {k: v for k, v in result.items() if k not in ("choices", "answers_head")}, flush=True)

    if "generate" in results and reference is not None and "choices" in results["generate"]:
        argmax = (reference.argmax(axis=1) + 1).tolist()
        choices = results["generate"].pop("choices")
        results["generate"]["agrees_with_logprob_argmax"] = round(
            float(np.mean([c == a for c, a in zip(choices, argmax)])), 3)
    speed = {m: r["pairs_per_s"] for m, r in results.items() if "pairs_per_s" in r}
    report = {
        "model": args.model, "data": f"{args.data} (first pairs)", "pairs": len(pairs),
        "prompts": len(prompts), "template": template.name, "chat_template": True, "shots": args.shots,
        "prompt_tokens": prompt_tokens, "needed_tokens": needed, "parameters": parameters,
        "non_embedding_parameters": body, "matmul_flops_per_s": peaks, "model_load_seconds": round(load_seconds, 1),
        "default_precision": backend.precision, "bf16_matrix_units": bf16_matrix_units(),
        "cpu": cpu_name(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "date": time.strftime("%Y-%m-%d"), "pairs_per_s": speed, "methods": results,
    }
    if "rlaif" in speed:
        report["roofline_ratio"] = results["rlaif"]["roofline_ratio"]
        report["roofline_ratio_fp32_peak"] = results["rlaif"]["roofline_ratio_fp32_peak"]
        for other in ("rlaif_fp32", "naive", "generate", "llamacpp", "vllm", "rlaif-vllm", "rlaif-http"):
            if other in speed:
                name = "speedup_vs_fp32" if other == "rlaif_fp32" else f"speedup_vs_{other}"
                # the peers ran on the first --peer-pairs pairs: compare rlaif on the same pairs
                ours = speed.get("rlaif_peer_pairs", speed["rlaif"]) if other in peers else speed["rlaif"]
                report[name] = round(ours / speed[other], 2)
    if "rlaif" in p_by_method and "rlaif_fp32" in p_by_method:
        report["p_vs_fp32"] = p_vs_reference(p_by_method["rlaif"], p_by_method["rlaif_fp32"], human)
    for method in ("llamacpp", "naive"):
        if method in p_by_method and "rlaif_fp32" in p_by_method:
            n = len(p_by_method[method])
            results[method]["p_vs_fp32"] = p_vs_reference(p_by_method[method], p_by_method["rlaif_fp32"][:n], human[:n])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| method | pairs | pairs/s | prompt tokens/s | roofline ratio (bf16 / fp32 peak) | peak RSS MiB |"
          "\n|---|---|---|---|---|---|")
    for method, r in results.items():
        if "pairs_per_s" in r:
            print(f"| {method} | {r['pairs']} | {r['pairs_per_s']} | {r['prompt_tokens_per_s']} | "
                  f"{r['roofline_ratio']} / {r['roofline_ratio_fp32_peak']} | {r['peak_rss_mib']} |")
    print({k: v for k, v in report.items() if k.startswith(("speedup", "roofline", "p_vs"))})


def cpu_name() -> str:
    """The processor's model name (speed figures are meaningless without it)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
