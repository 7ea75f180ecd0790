"""Rewards per second from a real ``rlaif serve`` at 1, 8 and 32 concurrent clients.

Run: .venv/bin/python benchmarks/reward_server.py [--model smollm2-135m] [--requests 64] \
         [--json benchmarks/results/reward_server.json]

The server runs as RL trainers use it: its own process (``python -m rlaif.cli serve``, default
precision and threads), OpenRLHF's ``/get_reward`` protocol, one query per request (what OpenRLHF's
single-turn executor sends; ``--items-per-request`` for TRL-style batches). Each concurrency level
sends the same ``--requests`` requests (real HH-RLHF contexts with their human-written replies),
clients in threads, each taking the next request as soon as its last one is answered. Reported per
level: rewards/s (items answered / wall seconds), request latency p50/p95, and the mean number of
prompts per backend step (from the server's /health counters), which is what batching buys.
The in-process ``DirectScorer`` on the same items, in one call (one padded batch of them all), is
the ceiling and the reference the served rewards are compared with (``--no-baseline`` skips it); a
warm-up request runs before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

import rlaif

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def lscpu() -> dict[str, str]:
    """The processor as lscpu names it (speed figures are meaningless without it)."""
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = fields.get("Flags", "").split()
    units = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return {"model_name": fields.get("Model name", "unknown"), "cpus": fields.get("CPU(s)", "?"),
            "bf16_units": ",".join(units) or "none"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "rlaif.cli", "serve", "--task", args.task, "--model", args.model,
               "--port", str(port), "--max-batch", str(args.max_batch), "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"rlaif serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("rlaif serve did not start within 600 s")


def run_level(url: str, bodies: list[dict], clients: int) -> dict:
    """Send every body with ``clients`` threads in flight; wall time, latencies, and the server's step counts."""
    before = httpx.get(f"{url}/health", timeout=30).json()["served"]
    pending = iter(range(len(bodies)))
    lock = threading.Lock()
    latencies, rewards = [], [None] * len(bodies)

    def client():
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                started = time.perf_counter()
                answer = http.post(f"{url}/get_reward", json=bodies[index])
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
                rewards[index] = answer.json()["rewards"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - started
    after = httpx.get(f"{url}/health", timeout=30).json()["served"]
    items = sum(len(r) for r in rewards)
    steps = after["batches"] - before["batches"]
    return {"clients": clients, "requests": len(bodies), "rewards": items, "seconds": round(seconds, 2),
            "rewards_per_s": round(items / seconds, 3),
            "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
            "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
            "backend_steps": steps, "prompts_per_step": round(items / max(steps, 1), 2), "answers": rewards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="harmless")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-process DirectScorer run")
    parser.add_argument("--json", default=str(HERE / "results" / "reward_server.json"))
    args = parser.parse_args()

    pairs = rlaif.load_pairs(DATA, "hh-rlhf", limit=args.requests * args.items_per_request)
    items = [(pair.context, pair.response_1) for pair in pairs]
    bodies = [{"query": [c + r for c, r in chunk], "prompts": [c for c, _ in chunk]}
              for chunk in (items[i:i + args.items_per_request] for i in range(0, len(items), args.items_per_request))]
    result = {"model": args.model, "task": args.task, "data": "hh-rlhf harmless-base, first pairs (context, reply 1)",
              "requests_per_level": len(bodies), "items_per_request": args.items_per_request,
              "server_max_batch": args.max_batch, "cpu": lscpu(), "date": time.strftime("%Y-%m-%d"),
              "machine_load_before": os.getloadavg()[0]}

    if not args.no_baseline:
        import torch

        backend = rlaif.TransformersBackend.from_pretrained(args.model)
        scorer = rlaif.DirectScorer(backend, rlaif.PromptTemplate(args.task), chat_template=True)
        scorer([items[0][0]], [items[0][1]])  # warm-up
        started = time.perf_counter()
        baseline = scorer([c for c, _ in items], [r for _, r in items])
        seconds = time.perf_counter() - started
        result["in_process"] = {"rewards": len(items), "seconds": round(seconds, 2),
                                "rewards_per_s": round(len(items) / seconds, 3),
                                "torch_threads": torch.get_num_threads()}
        del backend, scorer

    log = Path(args.json).with_suffix(".server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    process, url = start_server(args, log)
    try:
        health = httpx.get(f"{url}/health", timeout=30).json()
        result["dtype"] = health["fingerprint"]["dtype"]
        httpx.post(f"{url}/get_reward", json=bodies[0], timeout=600).raise_for_status()  # warm-up
        result["levels"] = []
        for clients in (int(c) for c in args.clients.split(",")):
            level = run_level(url, bodies, clients)
            answers = level.pop("answers")
            if not args.no_baseline:  # the server's rewards are the in-process ones (batch shapes move fp sums)
                served = np.array([r for answer in answers for r in answer], dtype=float)
                level["max_diff_vs_in_process"] = float(np.nanmax(np.abs(served - np.array(baseline))))
            result["levels"].append(level)
            print(json.dumps(level), flush=True)
    finally:
        process.terminate()
        process.wait(60)
    result["machine_load_after"] = os.getloadavg()[0]
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.model} ({result['dtype']}) on {result['cpu']['model_name']} ({result['cpu']['cpus']} CPUs, "
          f"bf16 units: {result['cpu']['bf16_units']}); {len(bodies)} requests of {args.items_per_request} per level")
    if "in_process" in result:
        print(f"in process, one call: {result['in_process']['rewards_per_s']} rewards/s")
    print("| clients | rewards/s | latency p50 / p95 (s) | prompts per backend step |\n|---|---|---|---|")
    for level in result["levels"]:
        print(f"| {level['clients']} | {level['rewards_per_s']} | {level['latency_p50_s']} / {level['latency_p95_s']} "
              f"| {level['prompts_per_step']} |")


if __name__ == "__main__":
    main()
