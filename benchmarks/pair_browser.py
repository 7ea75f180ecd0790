"""How fast the pair browser (``rlaif browse``) opens at 10,000 pairs, in a real headless browser.

Run: .venv/bin/python benchmarks/pair_browser.py --pairs 10000 --json benchmarks/results/pair_browser.json

Synthetic pairs with realistic lengths (context and each response 1-2 KB of words), labels in
both orders and human labels, are written with ``write_browser``; the file is then opened in
headless ``chromium`` several times per view. The page records, on ``<body>``, the time from
navigation start to its first page of rows (``data-render-ms``: reading the file, parsing the
HTML and the embedded JSON, filtering, sorting, building the rows) and the JSON.parse time alone
(``data-parse-ms``); ``--dump-dom`` reads them back after the load event. No virtual time here:
the numbers are wall-clock, so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rlaif.analysis.pair_browser import write_browser
from rlaif.labels_table import pairwise_rows
from rlaif.pairs import TIE, PreferencePair

HERE = Path(__file__).resolve().parent
WORDS = ("the of and to in is that it for was on are as with his they be at one have this from or had by word "
         "but what some we can out other were all there when up use your how said an each she which do their "
         "time if will way about many then them write would like so these her long make thing see him two").split()
#: The views timed: the default first page, a filtered and sorted one, and a text search over every pair.
VIEWS = {"default": "", "disagree_by_confidence": "#filter=disagree&sort=-confidence",
         "search": "#q=zebra&sort=-gap"}


def text(rng: np.random.Generator, low: int = 1000, high: int = 2000) -> str:
    size = int(rng.integers(low, high))
    words = rng.choice(WORDS, size // 4)
    return " ".join(words)[:size]


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, list[PreferencePair]]:
    rng = np.random.default_rng(seed)
    pairs = [PreferencePair(f"pair-{i:05d}", text(rng) + (" zebra" if i % 100 == 7 else ""), text(rng), text(rng),
                            [1, 2, TIE, None][int(rng.integers(4))], task="helpful") for i in range(n)]
    p_first, p_swapped = rng.uniform(0.02, 0.98, n), rng.uniform(0.02, 0.98, n)
    first = np.log(np.stack([p_first, 1 - p_first], axis=1))
    swapped = np.log(np.stack([1 - p_swapped, p_swapped], axis=1))
    rows = pairwise_rows(pairs, [{"truncated": i % 50 == 0} for i in range(n)], first, swapped, False,
                         {"model": "synthetic", "run_id": "benchmark"})
    return pd.DataFrame(rows), pairs


def open_once(chromium: str, url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as profile:
        started = time.perf_counter()
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                              "--dump-dom", url], capture_output=True, text=True, timeout=300, check=True).stdout
        process = time.perf_counter() - started
    body = re.search(r"<body([^>]*)>", dom).group(1)
    values = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    if values.get("ready") != "1":
        raise RuntimeError(f"the page did not finish rendering: {body!r}")
    matching = re.search(r'id="status" data-matching="(\d+)"', dom).group(1)
    return {"render_ms": float(values["render-ms"]), "parse_ms": float(values["parse-ms"]),
            "process_s": process, "matching": int(matching)}


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5, help="page loads per view (the median is reported)")
    parser.add_argument("--out", default=None, help="the HTML file (default: a temporary folder)")
    parser.add_argument("--json", default=str(HERE / "results" / "pair_browser.json"))
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")

    load_before = os.getloadavg()[0]  # other work on the machine slows every number here
    labels, pairs = synthetic(args.pairs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.out or Path(folder) / "pairs.html")
        started = time.perf_counter()
        write_browser(labels, pairs, path, title=f"benchmark: {args.pairs} synthetic pairs")
        write_seconds = time.perf_counter() - started
        size = path.stat().st_size
        views = {}
        for name, fragment in VIEWS.items():
            runs = [open_once(chromium, path.resolve().as_uri() + fragment) for _ in range(args.repeats)]
            views[name] = {"hash": fragment, "matching": runs[0]["matching"],
                           **{f"{key}_median": statistics.median(run[key] for run in runs)
                              for key in ("render_ms", "parse_ms", "process_s")},
                           "render_ms": [run["render_ms"] for run in runs]}
    text_bytes = sum(len(p.context.encode()) + len(p.response_1.encode()) + len(p.response_2.encode()) for p in pairs)
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "chromium": version,
              "pairs": args.pairs, "text_bytes_per_pair": text_bytes / args.pairs, "file_bytes": size,
              "write_seconds": write_seconds, "repeats": args.repeats,
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "views": views}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.pairs} pairs, {size / 1e6:.1f} MB, written in {write_seconds:.1f} s; {result['cpu']}, {version}")
    print("| view | matching | first page rendered (ms, median) | JSON.parse (ms) | chromium process (s) |")
    print("|---|---|---|---|---|")
    for name, view in views.items():
        print(f"| {name} `{view['hash'] or '(none)'}` | {view['matching']} | {view['render_ms_median']:.0f} | "
              f"{view['parse_ms_median']:.0f} | {view['process_s_median']:.1f} |")


if __name__ == "__main__":
    main()
