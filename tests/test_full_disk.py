"""A full disk, a failing disk, a read-only folder (issue 24): the run stops with a message naming the file,
the OS's reason and what to do; the journal keeps whole finished steps only; and the same command, run
again once there is room, completes the job exactly as an uninterrupted run does.

Full disks are real: a tiny tmpfs mounted by the test (root only, as in CI; skipped with the reason
elsewhere) and filled so that the next page the run asks for is refused. I/O errors are simulated.
"""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeBackend
from scripted_server import ScriptedServer

from rlaif.file_writes import WriteError, atomic_write_bytes
from rlaif.label_store import LabelStore, journal_path, label_rows
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.output_lock import lock_path
from rlaif.templates import PromptTemplate

TESTS = Path(__file__).resolve().parent
RLAIF = str(Path(sys.executable).with_name("rlaif"))
PAGE = 4096  # tmpfs hands out space a page at a time
STEP = 4  # pairs per step: 6 steps for the 24 example pairs
PAIRS = load_pairs(None, "examples")
RERUN = "run the same command again to resume"


def label(out: Path, pairs=PAIRS):
    return label_pairs(pairs, FakeBackend(), PromptTemplate("instruction"), out=out, progress=False,
                       pairs_per_step=STEP)


def pages(size: int) -> int:
    return -(-size // PAGE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its journal bytes, the journal's size after each step, and its final files."""
    folder = tmp_path_factory.mktemp("reference")
    label(folder / "labels.jsonl")
    label(folder / "labels.parquet")
    data = (folder / "labels.jsonl").read_bytes()
    lines = data.splitlines(keepends=True)
    assert len(lines) == len(PAIRS) == 24
    steps = [sum(map(len, lines[:k])) for k in range(STEP, len(lines) + 1, STEP)]
    return {"bytes": data, "steps": steps, "rows": label_rows(folder / "labels.jsonl"),
            "parquet_size": (folder / "labels.parquet").stat().st_size}


def assert_complete(out: Path, reference) -> None:
    """Every pair exactly once, in input order, with the uninterrupted run's values to the last bit."""
    rows = label_rows(out)
    assert [row["id"] for row in rows] == [pair.id for pair in PAIRS]
    assert rows == reference["rows"]
    if out.suffix == ".jsonl":
        assert out.read_bytes() == reference["bytes"]
    else:
        assert not journal_path(out).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB tmpfs, mounted for this test and always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path, leave_pages: int) -> Path:
    """A filler file that leaves exactly ``leave_pages`` pages free on ``disk``; delete it to free them."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize // PAGE
    filler = disk / "filler"
    filler.write_bytes(bytes((free - leave_pages) * PAGE))
    stats = os.statvfs(disk)
    assert stats.f_bavail * stats.f_frsize == leave_pages * PAGE
    return filler


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_disk_that_fills_mid_run_keeps_whole_steps_names_the_journal_and_resumes(small_disk, reference, suffix):
    steps = reference["steps"]
    # a step that needs a page more than the steps before it, near the middle of the run
    kept = min((k for k in range(1, len(steps)) if pages(steps[k]) > pages(steps[k - 1])),
               key=lambda k: abs(k - len(steps) / 2))
    out = small_disk / f"labels{suffix}"
    journal = journal_path(out)
    filler = fill(small_disk, 1 + pages(steps[kept - 1]))  # the lock file, and the first `kept` steps
    with pytest.raises(WriteError) as error:
        label(out)
    message = str(error.value)
    assert message.startswith(f"{journal}: cannot write it (No space left on device)"), message
    assert "every finished step before this one is kept" in message and RERUN in message
    assert journal.read_bytes() == reference["bytes"][:steps[kept - 1]]  # whole finished steps, nothing of the next
    assert sorted(os.listdir(small_disk)) == sorted(["filler", journal.name])  # no lock, no temporary file left
    filler.unlink()
    label(out)
    assert_complete(out, reference)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_disk_too_full_for_the_final_file_keeps_the_journal_and_the_rerun_only_writes_it(small_disk, reference,
                                                                                          suffix):
    out = small_disk / f"labels{suffix}"
    journal = journal_path(out)
    final = len(reference["bytes"]) if suffix == ".jsonl" else reference["parquet_size"]
    filler = fill(small_disk, 1 + pages(reference["steps"][-1]) + pages(final) - 1)  # a page short at the end
    with pytest.raises(WriteError) as error:
        label(out)
    message = str(error.value)
    assert message.startswith(f"{out}: cannot write it (No space left on device)"), message
    assert "every labeled step is kept" in message and RERUN in message
    assert journal.read_bytes() == reference["bytes"]
    assert sorted(os.listdir(small_disk)) == sorted(["filler", journal.name])
    filler.unlink()
    backend = FakeBackend()
    label_pairs(PAIRS, backend, PromptTemplate("instruction"), out=out, progress=False, pairs_per_step=STEP)
    assert backend.calls == 0  # nothing labeled again: only the output was left to write
    assert_complete(out, reference)


def failing_on(path_test, after: int, error: int, real):
    """``real`` (os.fsync, os.write, os.ftruncate) failing with ``error`` on call number ``after`` for a
    matching fd; a write there first puts down half its data, as a disk that fills mid-write does."""
    calls, halves = [], real is os.write

    def fake(fd, *args):
        if path_test(Path(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else "")):
            calls.append(fd)
            if len(calls) == after:
                if halves:
                    return real(fd, args[0][:len(args[0]) // 2])
                raise OSError(error, os.strerror(error))
            if halves and len(calls) == after + 1:
                raise OSError(error, os.strerror(error))
        return real(fd, *args)
    return fake


def test_an_io_error_on_the_journal_keeps_whole_steps_and_resumes(tmp_path, reference, monkeypatch):
    out = tmp_path / "labels.jsonl"
    monkeypatch.setattr(os, "fsync", failing_on(lambda p: p == out.resolve(), 3, errno.EIO, os.fsync))
    with pytest.raises(WriteError) as error:
        label(out)
    assert str(error.value).startswith(f"{out}: cannot write it (Input/output error)"), error.value
    assert RERUN in str(error.value)
    assert out.read_bytes() == reference["bytes"][:reference["steps"][1]]  # the step that failed is cut back off
    monkeypatch.undo()
    label(out)
    assert_complete(out, reference)


def test_an_io_error_on_the_final_file_removes_it_and_keeps_the_journal(tmp_path, reference, monkeypatch):
    out = tmp_path / "labels.jsonl"
    temporary = f".{out.name}."
    monkeypatch.setattr(os, "fsync", failing_on(lambda p: p.name.startswith(temporary), 1, errno.EIO, os.fsync))
    with pytest.raises(WriteError) as error:
        label(out)
    assert str(error.value).startswith(f"{out}: cannot write it (Input/output error)"), error.value
    assert out.read_bytes() == reference["bytes"] and os.listdir(tmp_path) == [out.name]
    monkeypatch.undo()
    label(out)
    assert_complete(out, reference)


def test_when_even_cutting_back_fails_the_torn_line_is_dropped_on_resume(tmp_path, reference, monkeypatch):
    out = tmp_path / "labels.jsonl"
    is_journal = lambda path: path == out.resolve()  # noqa: E731
    monkeypatch.setattr(os, "write", failing_on(is_journal, 3, errno.ENOSPC, os.write))
    monkeypatch.setattr(os, "ftruncate", failing_on(is_journal, 1, errno.EIO, os.ftruncate))
    with pytest.raises(WriteError, match="No space left on device"):
        label(out)
    torn = out.read_bytes()
    assert torn.startswith(reference["bytes"][:reference["steps"][1]]) and not torn.endswith(b"\n")
    monkeypatch.undo()
    LabelStore(out, reference["rows"][0]["run_id"])  # what a rerun opens first: the torn line is cut off on disk
    assert out.read_bytes() == torn[:torn.rfind(b"\n") + 1]
    label(out)
    assert_complete(out, reference)


def test_a_read_only_folder_is_named_and_the_rerun_completes(small_disk, reference):
    out = small_disk / "labels.jsonl"
    label(out, PAIRS[:8])  # an earlier, smaller job of the same run
    before = out.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(WriteError) as error:
        label(out)
    message = str(error.value)
    assert message.startswith(f"{lock_path(out)}: cannot write it (Read-only file system)"), message
    assert str(out) in message and "writable" in message and RERUN in message
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert out.read_bytes() == before
    label(out)
    assert_complete(out, reference)


def test_a_journal_without_write_permission_is_named_and_kept(tmp_path, reference):
    """Root ignores file modes, so as root the run drops the capability that lets it (as test_faults.py does)."""
    out = tmp_path / "labels.jsonl"
    label(out, PAIRS[:8])
    before = out.read_bytes()
    out.chmod(0o444)
    script = ("import sys; from fakes import FakeBackend; from rlaif.labeler import label_pairs; "
              "from rlaif.loaders import load_pairs; from rlaif.file_writes import WriteError; "
              "from rlaif.templates import PromptTemplate\n"
              "try:\n"
              f"    label_pairs(load_pairs(None, 'examples'), FakeBackend(), PromptTemplate('instruction'), "
              f"out={str(out)!r}, progress=False, pairs_per_step={STEP})\n"
              "except WriteError as exc:\n"
              "    sys.exit(f'error: {exc}')\n")
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: {out}: cannot write it (Permission denied)"), done.stderr
    assert "writable" in done.stderr and RERUN in done.stderr
    assert out.read_bytes() == before
    out.chmod(0o644)
    label(out)
    assert_complete(out, reference)


def test_the_command_line_on_a_full_disk_says_what_to_do_and_the_same_command_completes(small_disk):
    """Through ``rlaif label`` with no model: the HTTP engine against a local scripted server. Its one step
    of 8 pairs (about 6 KB) meets a disk with a page for the lock, one for the run's settings, one for labels."""
    out = small_disk / "labels.jsonl"
    filler = fill(small_disk, 3)
    with ScriptedServer() as server:
        command = [RLAIF, "label", "--data", "examples", "--format", "examples", "--limit", "8", "--quiet",
                   "--no-cache", "--backend", "http", "--base-url", server.url, "--max-concurrency", "4",
                   "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"error: {out}: cannot write it (No space left on device)" in done.stderr and RERUN in done.stderr
        assert out.read_bytes() == b""  # the one step there was did not finish: nothing of it is kept
        filler.unlink()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = label_rows(out)
    assert [row["id"] for row in rows] == [pair.id for pair in PAIRS[:8]]
    assert len(out.read_bytes()) > PAGE  # so the first run really was short of space for its labels


def test_a_rewritten_file_keeps_its_permissions_and_a_new_one_gets_the_usual_ones(tmp_path):
    """Atomic writes go through a private temporary file (mode 0600): the result must not stay private."""
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.html"
        atomic_write_bytes(new, b"page")
        assert new.stat().st_mode & 0o777 == 0o644
        shared = tmp_path / "shared.jsonl"
        shared.write_bytes(b"old")
        shared.chmod(0o664)
        atomic_write_bytes(shared, b"new")
        assert shared.read_bytes() == b"new" and shared.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(umask)
