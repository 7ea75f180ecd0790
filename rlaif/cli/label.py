"""``rlaif label``: label pairs with an LLM in both orders, resumably."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from rlaif.cli.data_options import add_data_options, load_data
from rlaif.cli.engines import add_engine_options, build_backend, describe, refuse_ignored_engine_options
from rlaif.cli.run_config import write_run_config
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


def cmd_label(args: argparse.Namespace) -> int:
    """Check every option before the model loads; then label, as the only writer of --out."""
    from rlaif.label_store import OUTPUT_SUFFIXES
    from rlaif.output_lock import OutputLock
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
    refuse_unused_options(args)
    if args.dry_run:
        return label_run(args, template, prompting, shard)
    with OutputLock(args.out):  # a second run on this --out is refused now, not after loading its model
        return label_run(args, template, prompting, shard)


def label_run(args: argparse.Namespace, template, prompting, shard: tuple[int, int] | None) -> int:
    from rlaif.analysis.report import format_report, summarize
    from rlaif.direct_scores import DirectScorer, score_pairs
    from rlaif.labeler import label_pairs
    from rlaif.score_cache import CachedBackend

    pairs = load_data(args)
    started = time.time()
    backend = build_backend(args)
    print(f"{describe(backend)}; template: {template.name}; {len(pairs)} pairs", file=sys.stderr)

    def run(engine, out: str | None):
        if args.direct:
            scorer = DirectScorer(engine, template, chat_template=args.chat_template)
            return score_pairs(pairs, scorer, out=out, fresh=args.fresh, progress=out is not None and not args.quiet,
                               shard=shard)
        if args.pride is not None:
            from rlaif.pride import label_pairs_pride

            return label_pairs_pride(pairs, engine, template, sample_pairs=args.pride, seed=args.seed, out=out,
                                     fresh=args.fresh, chat_template=args.chat_template, prompting=prompting,
                                     progress=out is not None and not args.quiet)
        return label_pairs(pairs, engine, template, chat_template=args.chat_template, out=out, fresh=args.fresh,
                           prompting=prompting, progress=out is not None and not args.quiet, shard=shard)

    if args.dry_run:
        from rlaif.dry_run import estimate_cost, format_cost

        loaded = time.time() - started
        cost = estimate_cost(backend, lambda engine: run(engine, None))
        print(format_cost(dataclasses.replace(cost, load_seconds=loaded)))
        print("dry run: nothing written", file=sys.stderr)
        return 0
    if args.dtype is None and backend.fingerprint().get("dtype") in ("float32", "bfloat16", "float16", "mixed"):
        args.dtype = backend.fingerprint()["dtype"]  # the precision chosen here, so a rerun elsewhere uses it too
    config = write_run_config(args.out, args.parser, args, backend.fingerprint())
    print(f"settings: {config} (rerun with --config {config})", file=sys.stderr)
    if not args.no_cache:
        backend = CachedBackend(backend, args.cache or f"{args.out}.cache.sqlite")
    labels = run(backend, args.out)
    cached = f" ({backend.hits} prompts from the score cache, {backend.misses} scored)" if not args.no_cache else ""
    print(f"wrote {len(labels)} rows to {args.out} in {time.time() - started:.0f} s{cached}", file=sys.stderr)
    print(format_report(summarize(labels)))
    return 0


def refuse_unused_options(args: argparse.Namespace) -> None:
    """Options this run would not read are refused, not dropped: the user meant something by them."""
    def given(dest: str) -> bool:
        return getattr(args, dest) != args.parser.get_default(dest)

    unused = [f"{flag} ({why})" for flag, dest, read, why in (
        ("--cot-max-tokens", "cot_max_tokens", args.cot, "needs --cot"),
        ("--cot-samples", "cot_samples", args.cot, "needs --cot"),
        ("--cot-temperature", "cot_temperature", args.cot, "needs --cot"),
        ("--random-shots", "random_shots", args.shots, "needs --shots"),
        ("--ensemble", "ensemble", "," in args.preamble, "needs several preambles"),
        ("--cache", "cache", not args.no_cache, "not with --no-cache"),
    ) if given(dest) and not read]
    if unused:
        raise SystemExit(f"error: this run would ignore {', '.join(unused)}; remove them or add what they need")
    refuse_ignored_engine_options(args)


def add_commands(commands) -> None:
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
    add_engine_options(label)
    label.add_argument("--shard", help="i/n: label only the i-th of n slices of the pairs (merge with `rlaif merge`)")
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
    label.add_argument("--quiet", action="store_true", help="no progress bar")
    label.add_argument("--config", help="YAML file of flags (keys as the flags are spelled, e.g. max-prompt-tokens); "
                                        "flags given here win. OUT.config.yaml, written by every run, is one")
    label.add_argument("--dry-run", action="store_true",
                       help="print the run's prompts, tokens, pairs cut or skipped, memory and an estimated wall "
                            "time from one measured step, then exit without labeling")
    label.set_defaults(func=cmd_label, parser=label)

