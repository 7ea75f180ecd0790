"""The engine options (``--model``, ``--backend``, ...) and the backend they build, shared by the commands
that score prompts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rlaif.backends.models import DEFAULT_MODEL
from rlaif.cli.data_options import parse_mapping


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="catalogue name (see `rlaif models`), local folder, .gguf file or hub name "
                             f"(default {DEFAULT_MODEL})")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "mixed", "auto"],
                        help="precision. transformers default: mixed on a CPU with bf16 matrix units (AMX or "
                             "AVX-512 bf16: linear layers in bf16, labels read in fp32), float32 elsewhere; "
                             "float32 is the exact path. vllm default: float32 (auto: the checkpoint's dtype)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    engine = parser.add_argument_group("engine", "which engine scores the prompts (default: transformers, "
                                                 "in process)")
    engine.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "http"],
                        help="transformers or vllm in this process, or an OpenAI-compatible server (http)")
    engine.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per engine")
    engine.add_argument("--gpu-memory-utilization", type=float, help="vllm: share of GPU memory the engine takes")
    engine.add_argument("--max-model-len", type=int, help="vllm: longest sequence the engine accepts")
    engine.add_argument("--vllm-option", action="append", default=[],
                        help="vllm: any other vllm.LLM option as key=value (repeatable), e.g. enforce_eager=true")
    engine.add_argument("--base-url", help="http: the server, e.g. http://127.0.0.1:8000 (no /v1)")
    engine.add_argument("--served-model", help="http: the model name the server serves (default --model)")
    engine.add_argument("--http-method", default="allowed_tokens", choices=["allowed_tokens", "echo", "chat"],
                        help="http: allowed_tokens (vLLM servers), echo (completion servers that echo log-probs), "
                             "chat (only /v1/chat/completions; labels must be among the top 20 tokens)")
    engine.add_argument("--tokenizer", help="http: tokenizer to count and encode with (default --model)")
    engine.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="http: environment variable holding the API key (the key is never logged or saved)")
    engine.add_argument("--max-concurrency", type=int, default=32, help="http: requests in flight")
    engine.add_argument("--timeout", type=float, default=120.0, help="http: seconds per request")
    engine.add_argument("--max-retries", type=int, default=6,
                        help="http: retries per request on 429/5xx/dropped connections (exponential backoff)")
    engine.add_argument("--batch-size", type=int, default=64, help="transformers: most prompts per forward pass")
    engine.add_argument("--max-batch-tokens", type=int, default=4096,
                        help="transformers: most tokens per forward pass (prompts x padded length); shared "
                             "prefixes run once")
    parser.add_argument("--max-prompt-tokens", type=int,
                        help="longest prompt to send (default: the model's limit); longer contexts are cut "
                             "from the left, pairs that cannot fit are skipped with a reason")


#: Options that only one engine reads.
ENGINE_ONLY = {"transformers": ("device", "batch_size", "max_batch_tokens"),
               "vllm": ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "vllm_option"),
               "http": ("base_url", "served_model", "http_method", "tokenizer", "api_key_env", "max_concurrency",
                        "timeout", "max_retries")}


def refuse_ignored_engine_options(args: argparse.Namespace) -> None:
    """``SystemExit`` naming the options ``--backend`` would ignore (another engine's, given a value)."""
    defaults = argparse.ArgumentParser()
    add_engine_options(defaults)
    ignored = [name for engine, names in ENGINE_ONLY.items() if engine != args.backend for name in names
               if getattr(args, name) != defaults.get_default(name)]
    if args.backend == "http" and args.dtype:
        ignored.append("dtype")  # the server chose its precision
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise SystemExit(f"error: --backend {args.backend} does not read {flags}: it would be ignored. Remove it, "
                         "or choose the engine that reads it")


def option_value(text: str) -> Any:
    """An engine option's value: JSON where it parses (numbers, true, null), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_backend(args: argparse.Namespace):
    """The engine ``--backend`` names, built from its options."""
    if args.backend == "vllm":
        from rlaif.backends.vllm_backend import VLLMBackend

        given = parse_mapping(",".join(args.vllm_option), "--vllm-option") or {}
        options = {key: option_value(value) for key, value in given.items()}
        if args.dtype == "mixed":
            raise SystemExit("error: --dtype mixed is the transformers backend's CPU path; vllm takes float32, "
                             "bfloat16, float16 or auto")
        return VLLMBackend.from_pretrained(args.model, dtype=args.dtype or "float32",
                                           tensor_parallel_size=args.tensor_parallel_size,
                                           max_model_len=args.max_model_len,
                                           gpu_memory_utilization=args.gpu_memory_utilization,
                                           max_prompt_tokens=args.max_prompt_tokens, seed=args.seed, **options)
    if args.backend == "http":
        from rlaif.backends.http_backend import OpenAICompatibleBackend

        if not args.base_url:
            raise SystemExit("error: --backend http needs --base-url, e.g. http://127.0.0.1:8000")
        return OpenAICompatibleBackend(args.base_url, args.served_model or args.model, method=args.http_method,
                                       tokenizer=args.tokenizer or (None if args.http_method == "chat" else args.model),
                                       api_key_env=args.api_key_env, max_concurrency=args.max_concurrency,
                                       timeout=args.timeout, max_retries=args.max_retries,
                                       max_prompt_tokens=args.max_prompt_tokens)
    from rlaif.backends.transformers_backend import TransformersBackend

    return TransformersBackend.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                               batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                                               max_prompt_tokens=args.max_prompt_tokens)


def describe(backend) -> str:
    """One line naming the model and, where the engine reports it, its precision."""
    precision = backend.fingerprint().get("dtype")
    if precision == "mixed":
        from rlaif.backends.cpu_precision import bf16_matrix_units

        precision = f"mixed (linear layers in bf16 on {bf16_matrix_units() or 'this device'}, labels read in fp32)"
    return f"model: {backend.source}" + (f"; {precision}" if precision else "")
