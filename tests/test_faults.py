"""Faults long labeling jobs meet: two writers on one output, ... Each test ends in a complete output equal
to an uninterrupted run, or in a clear message and a resume that completes it."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeBackend

from rlaif import loaders
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.output_lock import OutputInUseError, OutputLock, lock_path
from rlaif.pairs import DataError
from rlaif.templates import PromptTemplate

REPO = Path(__file__).resolve().parents[1]
RLAIF = str(Path(sys.executable).with_name("rlaif"))


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 24 shipped example pairs labeled by the real default model in one go."""
    out = tmp_path_factory.mktemp("reference") / "reference.jsonl"
    done = subprocess.run([RLAIF, *EXAMPLES, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return pd.read_json(out, lines=True)


EXAMPLES = ["label", "--data", "examples", "--format", "examples", "--quiet", "--batch-size", "4", "--no-cache"]


@pytest.mark.model
def test_two_label_runs_started_together_on_one_output(tmp_path, uninterrupted):
    runs = [subprocess.Popen([RLAIF, *EXAMPLES, "--out", "labels.jsonl"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=900), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    loser = next(err for code, _, err in results if code)
    winner_pid = next(run.pid for run, (code, _, _) in zip(runs, results) if code == 0)
    assert f"labels.jsonl is being written by another rlaif process (pid {winner_pid})" in loser
    together = pd.read_json(tmp_path / "labels.jsonl", lines=True)
    assert list(together["id"]) == list(uninterrupted["id"]) and len(together) == 24
    pd.testing.assert_series_equal(together["p"], uninterrupted["p"], rtol=0, atol=0)
    assert not (tmp_path / "labels.jsonl.lock").exists()


@pytest.mark.model
@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_keeps_its_finished_steps_says_how_to_resume_and_resumes(tmp_path, uninterrupted, stop, code):
    out = tmp_path / "labels.jsonl"
    run = subprocess.Popen([RLAIF, *EXAMPLES, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.time() + 600
    while time.time() < deadline and run.poll() is None and not (
            out.exists() and len(out.read_bytes().splitlines()) >= 8):  # the first step of 8 pairs is on disk
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be stopped"
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"every finished step is saved in {out}" in stderr and "run the same command again to resume" in stderr
    kept = out.read_bytes()
    assert kept.endswith(b"\n") and len(kept.splitlines()) % 8 == 0 and 8 <= len(kept.splitlines()) < 24
    assert not lock_path(out).exists()
    resumed = subprocess.run([RLAIF, *EXAMPLES, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    labels = pd.read_json(out, lines=True)
    assert list(labels["id"]) == list(uninterrupted["id"])
    pd.testing.assert_series_equal(labels["p"], uninterrupted["p"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- damaged or unreadable input files

HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def damaged(kind: str, folder: Path) -> tuple[Path, str, str]:
    """(a damaged input, its --format, what the error must say) for each way a file arrives broken."""
    if kind == "truncated gzip":
        path = folder / "cut.jsonl.gz"
        path.write_bytes(HH.read_bytes()[:len(HH.read_bytes()) // 2])  # cut short in transfer
        return path, "hh-rlhf", r"the compressed file is damaged or cut short .* \(after row \d+\)"
    if kind == "truncated json.gz":
        whole = gzip.compress(json.dumps([{"context": "q", "response_1": "a", "response_2": "b"}] * 50).encode())
        path = folder / "cut.json.gz"
        path.write_bytes(whole[:len(whole) - 20])
        return path, "json", "the compressed file is damaged or cut short"
    if kind == "not gzip":
        path = folder / "plain.jsonl.gz"
        path.write_text('{"context": "q"}\n')
        return path, "jsonl", "the compressed file is damaged or cut short"
    if kind == "truncated parquet":
        path = folder / "cut.parquet"
        pd.DataFrame({"context": ["q"] * 100, "response_1": ["a"] * 100, "response_2": ["b"] * 100}).to_parquet(path)
        path.write_bytes(path.read_bytes()[:-100])
        return path, "parquet", "cannot be read: .*Parquet"
    if kind == "parquet, wrong schema":
        path = folder / "other.parquet"
        pd.DataFrame({"prompt": ["q"], "a": ["x"], "b": ["y"]}).to_parquet(path)
        return path, "parquet", "row 1, field 'context': missing"
    if kind == "folder":
        path = folder / "data.jsonl"
        path.mkdir()
        return path, "jsonl", "is a folder; --format jsonl reads one file"
    if kind == "fifo":
        path = folder / "pipe.jsonl"
        os.mkfifo(path)
        return path, "jsonl", r"is not a regular file \(a FIFO"
    raise ValueError(kind)


KINDS = ["truncated gzip", "truncated json.gz", "not gzip", "truncated parquet", "parquet, wrong schema", "folder",
         "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_input_file_is_a_data_error_naming_it(tmp_path, kind):
    path, fmt, says = damaged(kind, tmp_path)
    with pytest.raises(DataError, match=says) as error:
        load_pairs(path, fmt)
    assert str(path) in str(error.value)


def as_a_user_without_read_rights(command: list[str]) -> list[str]:
    """``command`` run so that file permissions apply: root drops the capabilities that bypass them."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search", *command]


@pytest.mark.parametrize("kind", [*KINDS, "no read permission"])
def test_the_command_line_stops_on_a_damaged_input_and_keeps_what_was_labeled(tmp_path, kind):
    out = tmp_path / "labels.jsonl"
    label_pairs(load_pairs(None, "examples"), FakeBackend(), PromptTemplate("instruction"), out=out, progress=False)
    labeled = out.read_bytes()
    if kind == "no read permission":
        path, fmt, says = tmp_path / "secret.jsonl", "jsonl", "no permission to read it"
        path.write_text('{"context": "q", "response_1": "a", "response_2": "b"}\n')
        path.chmod(0)
    else:
        path, fmt, says = damaged(kind, tmp_path)
    command = as_a_user_without_read_rights(
        [RLAIF, "label", "--data", str(path), "--format", fmt, "--task", "instruction", "--out", str(out), "--fresh"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and str(path) in done.stderr
    assert re.search(says, done.stderr), done.stderr
    assert out.read_bytes() == labeled  # --fresh, but nothing is discarded before the data has loaded


def test_a_file_that_changes_while_it_is_read_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "growing.jsonl"
    path.write_text("".join(json.dumps({"context": f"q{i}", "response_1": "a", "response_2": "b", "label": 1}) + "\n"
                            for i in range(3)))
    parse = loaders.generic_parser()

    def parse_while_a_writer_appends(record, row, name, seed):
        if row == 1:
            with open(path, "a") as handle:
                handle.write(json.dumps({"context": "late", "response_1": "a", "response_2": "b", "label": 2}) + "\n")
        return parse(record, row, name, seed)

    monkeypatch.setattr(loaders, "generic_parser", lambda columns=None, label_map=None: parse_while_a_writer_appends)
    with pytest.raises(DataError, match=rf"file {path}: changed while it was read"):
        load_pairs(path, "jsonl")
