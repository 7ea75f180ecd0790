"""Command line: ``rlaif label``, ``merge``, ``report``, ``compare``, ``export``, ``templates``, ``models``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rlaif.backends.models import DEFAULT_MODEL
from rlaif.cli_data import add_data_options, load_data, parse_mapping
from rlaif.loaders import DEFAULT_TASK


def _prompting(args: argparse.Namespace):
    from rlaif.prompting import Prompting

    clamp = None
    if args.clamp:
        try:
            lo, hi = (float(x) for x in args.clamp.split(","))
        except ValueError:
            raise SystemExit(f"error: --clamp must look like 0.4,0.6; got {args.clamp!r}") from None
        clamp = (lo, hi)
    return Prompting(preambles=tuple(args.preamble.split(",")), ensemble=args.ensemble, shots=args.shots,
                     random_shots=args.random_shots, cot=args.cot, cot_max_tokens=args.cot_max_tokens,
                     cot_samples=args.cot_samples, cot_temperature=args.cot_temperature, clamp=clamp,
                     seed=args.seed)


def cmd_export(args: argparse.Namespace) -> int:
    from rlaif.export import preference_dataset
    from rlaif.label_store import read_labels

    dataset = preference_dataset(read_labels(args.labels), load_data(args), label=args.label,
                                 min_confidence=args.min_confidence, agreement=args.agreement,
                                 conversational=args.conversational)
    if not len(dataset):
        raise ValueError(f"no pair of {args.labels} is kept with --label {args.label}, --agreement {args.agreement}, "
                         f"--min-confidence {args.min_confidence}; nothing written")
    dataset.save_to_disk(args.out)
    print(f"{len(dataset)} preference pairs ({args.label} labels) written to {args.out}", file=sys.stderr)
    if args.push_to_hub:
        dataset.push_to_hub(args.push_to_hub)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from rlaif.analysis.report import format_report, summarize
    from rlaif.direct_scores import DirectScorer, score_pairs
    from rlaif.label_store import OUTPUT_SUFFIXES
    from rlaif.labeler import label_pairs
    from rlaif.score_cache import CachedBackend
    from rlaif.shards import parse_shard
    from rlaif.templates import PromptTemplate

    if not args.out.endswith(OUTPUT_SUFFIXES):
        raise SystemExit(f"error: --out must end in {' or '.join(OUTPUT_SUFFIXES)}, got {args.out}")
    task = args.task or DEFAULT_TASK.get(args.format)
    if task is None:
        raise SystemExit(f"error: --task is required for --format {args.format} "
                         "(see `rlaif templates` for the tasks that ship)")
    template = PromptTemplate(task, args.preamble.split(",")[0], args.templates)
    prompting = _prompting(args)  # bad combinations fail here, before the model loads
    shard = parse_shard(args.shard) if args.shard else None
    if args.pride is not None and (args.direct or args.shard):
        raise SystemExit("error: --pride labels a sample in both orders and the rest in one; it does not combine "
                         "with --direct (no positions) or --shard (the sample is drawn from all pairs)")
    if args.direct and (args.shots or args.random_shots or args.cot or args.cot_samples != 1 or args.clamp
                        or "," in args.preamble or args.max_prompt_tokens):
        raise SystemExit("error: --direct scores each response alone with the task's score templates; "
                         "--shots, --cot*, --clamp, several preambles and --max-prompt-tokens do not apply to it")
    pairs = load_data(args)
    started = time.time()
    backend = _backend(args)
    precision = backend.fingerprint().get("dtype")
    if precision == "mixed":
        from rlaif.backends.cpu_precision import bf16_matrix_units

        precision = f"mixed (linear layers in bf16 on {bf16_matrix_units() or 'this device'}, labels read in fp32)"
    print(f"model: {backend.source}; " + (f"{precision}; " if precision else "")
          + f"template: {template.name}; {len(pairs)} pairs", file=sys.stderr)
    if not args.no_cache:
        backend = CachedBackend(backend, args.cache or f"{args.out}.cache.sqlite")
    if args.direct:
        scorer = DirectScorer(backend, template, chat_template=args.chat_template)
        labels = score_pairs(pairs, scorer, out=args.out, fresh=args.fresh, progress=not args.quiet, shard=shard)
    elif args.pride is not None:
        from rlaif.pride import label_pairs_pride
        labels = label_pairs_pride(pairs, backend, template, sample_pairs=args.pride, seed=args.seed, out=args.out,
                                   fresh=args.fresh, chat_template=args.chat_template, prompting=prompting,
                                   progress=not args.quiet)
    else:
        labels = label_pairs(pairs, backend, template, chat_template=args.chat_template, out=args.out,
                             fresh=args.fresh, prompting=prompting, progress=not args.quiet, shard=shard)
    cached = f" ({backend.hits} prompts from the score cache, {backend.misses} scored)" if not args.no_cache else ""
    print(f"wrote {len(labels)} rows to {args.out} in {time.time() - started:.0f} s{cached}", file=sys.stderr)
    print(format_report(summarize(labels)))
    return 0


def _option_value(text: str) -> Any:
    """An engine option's value: JSON where it parses (numbers, true, null), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _backend(args: argparse.Namespace):
    """The engine ``--backend`` names, built from its options."""
    if args.backend == "vllm":
        from rlaif.backends.vllm_backend import VLLMBackend

        given = parse_mapping(",".join(args.vllm_option), "--vllm-option") or {}
        options = {key: _option_value(value) for key, value in given.items()}
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


def cmd_merge(args: argparse.Namespace) -> int:
    from rlaif.shards import merge_shards

    rows = merge_shards(args.shards, args.out)
    print(f"merged {len(args.shards)} file(s): {len(rows)} pairs, every shard complete -> {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlaif.analysis.report import analyze, format_report, json_safe
    from rlaif.label_store import read_labels

    labels = read_labels(args.labels)
    summary = analyze(labels, by=args.by, bins=args.bins, tie_band=args.tie_band,
                      temperature_scaling=args.temperature_scaling)
    print(json.dumps(json_safe(summary), indent=2) if args.json else format_report(summary))
    if args.html:
        from rlaif.analysis.html_report import write_html

        path = write_html(labels, args.html, title=f"rlaif report: {args.labels}", by=args.by, bins=args.bins,
                          tie_band=args.tie_band)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rlaif.analysis import agreement
    from rlaif.analysis.report import json_safe
    from rlaif.label_store import read_labels

    a, b = read_labels(args.a), read_labels(args.b)
    result = agreement.labeler_agreement(a, b, tie_band=args.tie_band)
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
        return 0
    print(f"common pairs             {result['common_pairs']}")
    print(f"alignment                A {result['alignment_a']:.1%}   B {result['alignment_b']:.1%}")
    print(f"A and B agree            {result['agreement']:.1%} (Cohen's kappa {result['kappa']:.3f})")
    print(f"McNemar (exact)          A right/B wrong {result['mcnemar_b']}, A wrong/B right {result['mcnemar_c']}, "
          f"p = {result['mcnemar_p']:.4f}")
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from rlaif.templates import PromptTemplate, list_tasks

    for task, description in list_tasks(args.templates).items():
        template = PromptTemplate(task, template_dir=args.templates)
        flip = " (asks which is MORE harmful; flipped)" if template.asks_more_harmful else ""
        print(f"{task:15s} labels {'/'.join(template.labels)}{flip}  {description}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import subprocess

    from rlaif.backends.catalogue import CATALOGUE, pip_install_args
    from rlaif.backends.model_files import gguf_path

    if args.action == "install":
        if args.name not in CATALOGUE:
            raise SystemExit(f"error: unknown model {args.name!r}; known: {', '.join(CATALOGUE)}")
        entry = CATALOGUE[args.name]
        print("running:", " ".join(pip_install_args(entry)), file=sys.stderr)
        subprocess.run(pip_install_args(entry), check=True)
        print(f"{entry.name}: {gguf_path(entry)}")
        return 0
    print(f"{'name':20s} {'params':>6s} {'size':>9s}  installed  install with")
    for entry in CATALOGUE.values():
        installed = "yes" if entry.installed else "no"
        default = "  (default)" if entry.name == DEFAULT_MODEL else ""
        print(f"{entry.name:20s} {entry.parameters:>6s} {entry.size / 2**20:7.0f}MB  {installed:9s}  "
              f"{entry.install_command()}{default}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlaif", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    label = commands.add_parser("label", help="label preference pairs with an LLM, in both orders")
    add_data_options(label)
    label.add_argument("--task", help=f"template task (default per format: {DEFAULT_TASK})")
    label.add_argument("--preamble", default="base",
                       help="preamble name (base, detailed, principle_1, ...); several, comma-separated, "
                            "make an ensemble")
    label.add_argument("--ensemble", default="average", choices=["average", "sample"],
                       help="with several preambles: average the label over all, or sample one per pair (seeded)")
    label.add_argument("--shots", type=int, default=0, help="few-shot exemplars from the task's exemplars.jsonl")
    label.add_argument("--random-shots", action="store_true", help="seeded random exemplars per pair (else file order)")
    label.add_argument("--cot", action="store_true", help="two-step chain-of-thought: generate a rationale per order, "
                                                          "then read the label after it")
    label.add_argument("--cot-max-tokens", type=int, default=256)
    label.add_argument("--cot-samples", type=int, default=1, help="self-consistency: rationales sampled per order")
    label.add_argument("--cot-temperature", type=float, default=0.0, help="0 = greedy")
    label.add_argument("--clamp", help="lo,hi: clamp each order's probability, e.g. 0.4,0.6 (Constitutional AI)")
    label.add_argument("--pride", type=int, metavar="N",
                       help="PriDe: label N seeded pairs in both orders, estimate the position prior there, and "
                            "label the rest in one order with the prior divided out (N + n prompts, not 2n)")
    label.add_argument("--direct", action="store_true",
                       help="direct scoring: each response scored 1-10 alone; P(1 preferred) = sigmoid(s1 - s2)")
    label.add_argument("--templates", help="folder of your own task templates (default: the shipped ones)")
    label.add_argument("--model", default=DEFAULT_MODEL,
                       help="catalogue name (see `rlaif models`), local folder, .gguf file or hub name "
                            f"(default {DEFAULT_MODEL})")
    label.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "mixed", "auto"],
                       help="precision. transformers default: mixed on a CPU with bf16 matrix units (AMX or "
                            "AVX-512 bf16: linear layers in bf16, labels read in fp32), float32 elsewhere; "
                            "float32 is the exact path. vllm default: float32 (auto: the checkpoint's dtype)")
    label.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    engine = label.add_argument_group("engine", "which engine scores the prompts (default: transformers, in process)")
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
    label.add_argument("--shard", help="i/n: label only the i-th of n slices of the pairs (merge with `rlaif merge`)")
    label.add_argument("--batch-size", type=int, default=64, help="most prompts per forward pass")
    label.add_argument("--max-batch-tokens", type=int, default=4096,
                       help="most tokens per forward pass (prompts x padded length); shared prefixes run once")
    label.add_argument("--out", required=True, help="labels file, .jsonl or .parquet")
    chat = label.add_mutually_exclusive_group()
    chat.add_argument("--chat-template", dest="chat_template", action="store_true", default=True,
                      help="wrap the prompt in the model's chat template (default)")
    chat.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                      help="send the prompt as plain text")
    resume = label.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="fresh", action="store_false", default=False,
                        help="skip pairs already in --out from the same run (the default)")
    resume.add_argument("--fresh", dest="fresh", action="store_true",
                        help="discard --out and start over (the score cache is kept: it is keyed by model, "
                             "prompt and labels, so it is never stale)")
    label.add_argument("--cache", help="score cache file (SQLite; default OUT.cache.sqlite); share one between jobs")
    label.add_argument("--no-cache", action="store_true", help="score every prompt, keep no score cache")
    label.add_argument("--max-prompt-tokens", type=int,
                       help="longest prompt to send (default: the model's limit); longer contexts are cut "
                            "from the left, pairs that cannot fit are skipped with a reason")
    label.add_argument("--quiet", action="store_true", help="no progress bar")
    label.set_defaults(func=cmd_label)

    report = commands.add_parser("report", help="agreement with human labels, position bias, candidate mass")
    report.add_argument("labels", help="labels file written by `rlaif label`")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument("--html", help="also write a self-contained HTML report with plots to this file")
    report.add_argument("--by", default="task", help="column to break alignment down by (default task)")
    report.add_argument("--bins", type=int, default=10, help="calibration bins")
    report.add_argument("--tie-band", type=float, default=0.0,
                        help="count |p - 0.5| < this as an AI tie (a disagreement)")
    report.add_argument("--temperature-scaling", action="store_true",
                        help="fit a temperature on a seeded half of the pairs; report calibration on the other "
                             "half before and after")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser("compare", help="two labeling runs side by side on their common pairs (McNemar)")
    compare.add_argument("a", help="labels file A")
    compare.add_argument("b", help="labels file B")
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--tie-band", type=float, default=0.0)
    compare.set_defaults(func=cmd_compare)

    merge = commands.add_parser("merge", help="merge the outputs of `rlaif label --shard i/n` into one file, "
                                              "checking that no pair is missing or repeated")
    merge.add_argument("shards", nargs="+", help="the shard output files")
    merge.add_argument("--out", required=True, help="merged labels file, .jsonl or .parquet")
    merge.set_defaults(func=cmd_merge)

    export = commands.add_parser("export", help="a labels file as TRL's preference dataset (prompt, chosen, "
                                                "rejected), written with datasets' save_to_disk")
    export.add_argument("labels", help="labels file written by `rlaif label`")
    add_data_options(export)  # the pairs that were labeled (same data, --limit and --seed): the file holds no texts
    export.add_argument("--to", default="preference", choices=["preference"], help="TRL dataset type")
    export.add_argument("--out", required=True, help="folder for datasets' save_to_disk")
    export.add_argument("--label", default="ai", choices=["ai", "human"], help="whose preference picks `chosen`")
    export.add_argument("--min-confidence", type=float, default=0.0, help="keep pairs with |p - 0.5| above this")
    export.add_argument("--agreement", default="any", choices=["any", "agree", "disagree"],
                        help="keep pairs where the AI and people agree (or disagree); both must have decided")
    export.add_argument("--conversational", action="store_true",
                        help="prompt/chosen/rejected as chat messages (TRL's conversational form)")
    export.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset to the Hugging Face hub")
    export.set_defaults(func=cmd_export)

    templates = commands.add_parser("templates", help="list the labeling tasks and their templates")
    templates.add_argument("--templates", help="folder of your own task templates")
    templates.set_defaults(func=cmd_templates)
    models = commands.add_parser("models", help="the offline model catalogue: list, or install one")
    models.add_argument("action", nargs="?", default="list", choices=["list", "install"])
    models.add_argument("name", nargs="?", help="catalogue name, for install")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rlaif.pairs import DataError
    from rlaif.templates import TemplateError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished labels are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except (DataError, TemplateError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
