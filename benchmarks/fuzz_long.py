"""Fuzzing at scale: every loader's and every template renderer's fuzz test at 10,000 examples (issue 24, part 5).

Run: .venv/bin/python benchmarks/fuzz_long.py --json benchmarks/results/fuzz_long.json
     .venv/bin/python benchmarks/fuzz_long.py -k renders     # some of the tests (pytest's -k)

Runs pytest on the fuzz tests below with ``RLAIF_HYPOTHESIS_PROFILE=long`` (tests/fuzzing.py: 10,000
examples per test, no deadline) and ``--hypothesis-show-statistics``, and records per test the
examples hypothesis ran (passing, failing and invalid ones, over all its phases, and in the generate
phase alone), why it stopped, its outcome and its wall time, and the whole run's wall time. A test
that fails is reported with the rest (hypothesis prints the shrunk example) and the script exits
with pytest's status. CI runs the same tests in the fast profile (the 100-200 examples each pins).
No model is loaded; the numbers are wall-clock, so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The fuzz tests, by what they cover. Parametrized tests run once per loader format.
FUZZ_TESTS = {
    "loader": [
        "tests/test_safety.py::test_every_loader_gives_pairs_or_a_located_data_error",  # each publisher's format
        "tests/test_loaders.py::test_property_every_generic_format_keeps_the_text_or_names_the_bad_row_and_field",
        "tests/test_loaders.py::test_property_generic_loader_gives_pairs_or_data_error",  # raw bytes, JSONL
    ],
    "renderer": [
        "tests/test_safety.py::test_any_data_renders_literally_in_every_shipped_template",
        "tests/test_safety.py::test_any_exemplars_and_rationales_render_literally",
        "tests/test_safety.py::test_any_data_renders_literally_in_every_score_template",
        "tests/test_safety.py::test_random_user_templates_render_or_raise_template_error",
    ],
}
PROFILE_VARIABLE = "RLAIF_HYPOTHESIS_PROFILE"
PHASE = re.compile(r"^\s*- during (\w+) phase \(([\d.]+) seconds\):")
COUNTS = re.compile(r"^\s*- (\d+) passing, (\d+) failing, and (\d+) invalid test cases")
STOPPED = re.compile(r"^\s*- Stopped because (.*)$")
TEST_HEADER = re.compile(r"^(tests/\S+::\S+):$")


def parse_statistics(output: str) -> dict[str, dict]:
    """Per test node id: examples per phase and in all, and why hypothesis stopped generating."""
    stats: dict[str, dict] = {}
    current = phase = None
    for line in output.splitlines():
        if match := TEST_HEADER.match(line):
            current = stats.setdefault(match.group(1), {"phases": {}, "stopped_because": None})
            phase = None
        elif current is None:
            continue
        elif match := PHASE.match(line):
            phase = current["phases"].setdefault(match.group(1), {"seconds": float(match.group(2))})
        elif (match := COUNTS.match(line)) and phase is not None:
            phase.update(passing=int(match.group(1)), failing=int(match.group(2)), invalid=int(match.group(3)))
        elif match := STOPPED.match(line):
            current["stopped_because"] = match.group(1).strip()
    for entry in stats.values():
        for key in ("passing", "failing", "invalid"):
            entry[key] = sum(p.get(key, 0) for p in entry["phases"].values())
        entry["generate_passing"] = entry["phases"].get("generate", {}).get("passing", 0)
    return stats


def parse_junit(path: Path) -> dict[str, dict]:
    """Per test node id: outcome and wall time (pytest's own timing of setup, call and teardown)."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        nodeid = f"{module}.py::{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        results[nodeid] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 2)}
    return results


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def kind_of(nodeid: str) -> str:
    function = nodeid.split("[")[0]
    return next((kind for kind, tests in FUZZ_TESTS.items() if function in tests), "other")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="long", help="hypothesis profile (tests/fuzzing.py): long or fast")
    parser.add_argument("-k", dest="keyword", default=None, help="run only the tests pytest's -k selects")
    parser.add_argument("--json", default=str(HERE / "results" / "fuzz_long.json"))
    args = parser.parse_args(argv)

    tests = [test for group in FUZZ_TESTS.values() for test in group]
    env = {**os.environ, PROFILE_VARIABLE: args.profile, "PYTHONUNBUFFERED": "1"}  # progress as it goes
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-m", "not model",
                   "--hypothesis-show-statistics", f"--junitxml={junit}", "-o", "junit_family=xunit2"]
        if args.keyword:
            command += ["-k", args.keyword]
        shown = f"{PROFILE_VARIABLE}={args.profile} python " + " ".join(command[1:])
        print("$", shown, flush=True)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        exit_code = process.wait()
        wall = time.perf_counter() - started
        timings = parse_junit(junit) if junit.is_file() else {}
    output = "".join(lines)
    statistics = parse_statistics(output)
    summary = next((line.strip(" =\n") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)),
                   "")
    rows = []
    for nodeid in sorted(set(statistics) | set(timings), key=lambda n: (kind_of(n), n)):
        stats, timing = statistics.get(nodeid, {}), timings.get(nodeid, {})
        rows.append({"test": nodeid, "covers": kind_of(nodeid), "outcome": timing.get("outcome"),
                     "seconds": timing.get("seconds"),
                     **{key: stats.get(key) for key in ("passing", "failing", "invalid", "generate_passing",
                                                        "stopped_because", "phases")}})
    report = {"profile": args.profile, "keyword": args.keyword, "cpu": cpu_name(), "cores": os.cpu_count(),
              "python": platform.python_version(), "hypothesis": _version("hypothesis"),
              "date": datetime.date.today().isoformat(), "command": shown,
              "wall_s": round(wall, 1), "exit_code": exit_code, "pytest_summary": summary,
              "examples": sum(row["passing"] or 0 for row in rows), "tests": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{report['cpu']} ({report['cores']} cores), hypothesis {report['hypothesis']}, profile {args.profile}: "
          f"{len(rows)} tests, {report['examples']:,} passing examples in {wall / 60:.1f} min; {summary}")
    print("| covers | test | passing | failing | invalid | stopped because | seconds | outcome |\n"
          "|---|---|---|---|---|---|---|---|")
    for row in rows:
        name = row["test"].split("::", 1)[1]
        print(f"| {row['covers']} | {name} | {row['passing']} | {row['failing']} | {row['invalid']} "
              f"| {row['stopped_because']} | {row['seconds']} | {row['outcome']} |")
    print(f"results: {args.json}")
    return exit_code


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
