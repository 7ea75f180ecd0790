"""Faults long labeling jobs meet: two writers on one output, ... Each test ends in a complete output equal
to an uninterrupted run, or in a clear message and a resume that completes it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeBackend

from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.output_lock import OutputInUseError, OutputLock, lock_path
from rlaif.templates import PromptTemplate

REPO = Path(__file__).resolve().parents[1]
RLAIF = str(Path(sys.executable).with_name("rlaif"))
LLMBAR = REPO.parent / "shared" / "data" / "llmbar" / "LLMBar_Natural"


def hold_lock(out: Path, *, then: str = "time.sleep(600)") -> subprocess.Popen:
    """Another process that takes the output's lock, says so on stdout, then runs ``then``."""
    code = textwrap.dedent(f"""
        import sys, time
        from rlaif.output_lock import OutputLock
        lock = OutputLock({str(out)!r}).acquire()
        print("locked", flush=True)
        {then}
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid_and_the_lock_dies_with_its_holder(tmp_path):
    out = tmp_path / "labels.jsonl"
    holder = hold_lock(out)
    try:
        with pytest.raises(OutputInUseError, match=rf"{out} is being written by another rlaif process "
                                                   rf"\(pid {holder.pid}\)"):
            OutputLock(out).acquire()
        with pytest.raises(OutputInUseError):  # the library's own writer is refused the same way
            label_pairs(load_pairs(None, "examples"), FakeBackend(), PromptTemplate("instruction"), out=out,
                        progress=False)
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with OutputLock(out):  # SIGKILL left the file behind but no lock: nothing to clean by hand
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


def test_the_lock_is_reentrant_in_one_process_and_freed_by_the_last_release(tmp_path):
    out = tmp_path / "labels.jsonl"
    outer = OutputLock(out).acquire()
    labels = label_pairs(load_pairs(None, "examples"), FakeBackend(), PromptTemplate("instruction"), out=out,
                         progress=False)  # the store takes the lock again inside
    assert len(labels) == 24 and lock_path(out).exists()
    outer.release()
    assert not lock_path(out).exists()
    holder = hold_lock(out, then="lock.release(); print('released', flush=True); time.sleep(600)")
    try:
        assert holder.stdout.readline().strip() == "released"
        with OutputLock(out):  # a released lock is free at once, though its holder still runs
            pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.model
def test_two_label_runs_started_together_on_one_output(tmp_path):
    command = [RLAIF, "label", "--data", str(LLMBAR), "--format", "llmbar", "--limit", "4", "--quiet",
               "--no-cache"]
    runs = [subprocess.Popen(command + ["--out", "labels.jsonl"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=900), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code)
    winner_pid = next(run.pid for run, (code, _, _) in zip(runs, results) if code == 0)
    assert f"labels.jsonl is being written by another rlaif process (pid {winner_pid})" in loser
    reference = subprocess.run(command + ["--out", "alone.jsonl"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=900)
    assert reference.returncode == 0, reference.stderr
    together = pd.read_json(tmp_path / "labels.jsonl", lines=True)
    alone = pd.read_json(tmp_path / "alone.jsonl", lines=True)
    assert list(together["id"]) == list(alone["id"]) and len(together) == 4
    pd.testing.assert_series_equal(together["p"], alone["p"], rtol=0, atol=0)
    assert not (tmp_path / "labels.jsonl.lock").exists()
    assert json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])["run_id"] == alone["run_id"][0]
