"""The command line's data options (``--data``, ``--format``, generic column maps, ...), shared by every
command that loads pairs: ``rlaif label`` labels them, ``rlaif export`` joins them back to their labels."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rlaif.loaders import FORMATS, GENERIC_FORMATS


def parse_mapping(text: str | None, what: str) -> dict[str, str] | None:
    """Parse ``a=b,c=d`` into a dict."""
    if not text:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"error: {what} must look like key=value,key=value; got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_label_map(text: str | None) -> dict[Any, int] | None:
    """``--label-map 0=1,1=2,tie=0``: data value -> 1, 2 or 0 (tie); numbers match numbers and strings."""
    raw = parse_mapping(text, "--label-map")
    if raw is None:
        return None
    result: dict[Any, int] = {}
    for key, value in raw.items():
        if value not in ("0", "1", "2"):
            raise SystemExit(f"error: --label-map values must be 1, 2 or 0 (tie); got {key}={value}")
        result[key] = int(value)
        if key.lstrip("-").isdigit():
            result[int(key)] = int(value)
    return result


def load_data(args: argparse.Namespace):
    """The pairs the data options name (``add_data_options``); bad records counted when skipped."""
    from rlaif.loaders import load_pairs

    pairs = load_pairs(args.data, args.format, limit=args.limit, seed=args.seed,
                       columns=parse_mapping(args.columns, "--columns"), label_map=parse_label_map(args.label_map),
                       skip_bad=args.skip_bad, split=args.split,
                       **({"data_dir": args.data_dir} if args.data_dir else {}))
    if pairs.skipped:
        print(f"skipped {len(pairs.skipped)} bad record(s); first: {pairs.skipped[0]}", file=sys.stderr)
    if not pairs:
        raise SystemExit(f"error: no pairs loaded from {args.data}")
    return pairs


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="file, folder, or Hugging Face hub name")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS) + list(GENERIC_FORMATS))
    parser.add_argument("--limit", type=int, help="only the first N pairs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the chosen/rejected position coin flip")
    parser.add_argument("--columns", help="generic formats: field=column,... (fields: id, context, "
                                          "response_1, response_2, label, chosen, rejected, task)")
    parser.add_argument("--label-map", help="generic formats: value=1|2|0,... (0 = tie), e.g. 0=1,1=2")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad records (counted) instead of stopping")
    parser.add_argument("--split", default="train", help="split, for hub names and folders")
    parser.add_argument("--data-dir", help="subfolder of a hub data set, e.g. harmless-base for Anthropic/hh-rlhf")
