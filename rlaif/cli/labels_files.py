"""Commands that read labels files: ``rlaif report``, ``compare``, ``merge``, ``export`` and ``browse``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlaif.cli.data_options import add_data_options, load_data


def cmd_report(args: argparse.Namespace) -> int:
    from rlaif.analysis.report import analyze, format_report, json_safe
    from rlaif.label_store import read_labels

    if args.pairs and not args.html:
        raise ValueError("--pairs links the HTML report to a pair browser: give --html too")
    labels = read_labels(args.labels)
    summary = analyze(labels, by=args.by, bins=args.bins, tie_band=args.tie_band,
                      temperature_scaling=args.temperature_scaling)
    print(json.dumps(json_safe(summary), indent=2) if args.json else format_report(summary))
    if args.html:
        from rlaif.analysis.html_report import write_html

        path = write_html(labels, args.html, title=f"rlaif report: {args.labels}", by=args.by, bins=args.bins,
                          tie_band=args.tie_band, pairs=args.pairs)
        print(f"wrote {path}", file=sys.stderr)
        if args.pairs and not Path(args.pairs).exists():
            print(f"note: {args.pairs} does not exist yet; write it with `rlaif browse {args.labels} --data ... "
                  f"--out {args.pairs}`", file=sys.stderr)
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


def cmd_merge(args: argparse.Namespace) -> int:
    from rlaif.shards import merge_shards

    rows = merge_shards(args.shards, args.out)
    print(f"merged {len(args.shards)} file(s): {len(rows)} pairs, every shard complete -> {args.out}", file=sys.stderr)
    return 0


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


def cmd_browse(args: argparse.Namespace) -> int:
    from rlaif.analysis.pair_browser import write_browser
    from rlaif.label_store import read_labels

    labels = read_labels(args.labels)
    path = write_browser(labels, load_data(args), args.out, title=args.title or f"rlaif pairs: {args.labels}")
    print(f"{len(labels)} pairs written to {path} (open it in a browser; a view is a URL hash, "
          f"e.g. {path.name}#filter=disagree&sort=-confidence)", file=sys.stderr)
    return 0


def add_commands(commands) -> None:
    report = commands.add_parser("report", help="agreement with human labels, position bias, candidate mass")
    report.add_argument("labels", help="labels file written by `rlaif label`")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.add_argument("--html", help="also write a self-contained HTML report with plots to this file")
    report.add_argument("--by", default="task", help="column to break alignment down by (default task)")
    report.add_argument("--bins", type=int, default=10, help="calibration bins")
    report.add_argument("--tie-band", type=float, default=0.0,
                        help="count |p - 0.5| < this as an AI tie (a disagreement)")
    report.add_argument("--pairs", metavar="PATH", help="with --html: link the report to the pair browser at PATH "
                                                         "(written by `rlaif browse`), by its relative path")
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

    browse = commands.add_parser("browse", help="every pair with its texts, p in both orders, both labels and flags "
                                                "on one static HTML page (filters, sort, search)")
    browse.add_argument("labels", help="labels file written by `rlaif label`")
    add_data_options(browse)  # the pairs that were labeled (same data, --limit and --seed): the file holds no texts
    browse.add_argument("--out", required=True, help="the HTML file to write (it needs no other file or server)")
    browse.add_argument("--title", help="the page's title (default: the labels file's name)")
    browse.set_defaults(func=cmd_browse)
