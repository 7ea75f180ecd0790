"""A damaged score cache (issue 24): truncated, garbage, another table layout, unusable values, a lock held
by another process. Real files and real processes, the fake engine: each case ends in labels equal to an
uncached run, or in one line naming the file and what to do; never a traceback, never a cached wrong number."""

import json
import logging
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from fakes import FakeBackend

from rlaif import score_cache
from rlaif.cli import label as label_command
from rlaif.cli import main
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.score_cache import CachedBackend, CacheError, CacheLockedError
from rlaif.templates import PromptTemplate

TEMPLATE = PromptTemplate("instruction")
PAIRS = load_pairs(None, "examples")
PROMPTS = 2 * len(PAIRS)  # each pair is scored in both orders


def label(backend):
    return label_pairs(PAIRS, backend, TEMPLATE, progress=False)


@pytest.fixture(scope="module")
def uncached():
    return label(FakeBackend())


@pytest.fixture
def built(tmp_path):
    """A real cache of the shipped pairs, closed, so that all of it is in the main file."""
    path = tmp_path / "cache.sqlite"
    cached = CachedBackend(FakeBackend(), path)
    label(cached)
    cached.close()
    assert cached.misses == PROMPTS and not (tmp_path / "cache.sqlite-wal").exists()
    return path


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch):
    monkeypatch.setattr(score_cache, "BUSY_TIMEOUT", 0.5)


@contextmanager
def locked(path):
    """Another process holding the cache's write lock (``BEGIN EXCLUSIVE``) until the block ends."""
    script = ("import sqlite3, sys, time\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('BEGIN EXCLUSIVE')\n"
              "print('locked', flush=True)\n"
              "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def garbage(path):
    path.write_bytes(bytes(range(256)) * 40)
    path.with_name(path.name + "-wal").write_bytes(b"not a write-ahead log" * 50)


def scribble(path):
    """A valid header, then junk over every page after the first."""
    data = path.read_bytes()
    path.write_bytes(data[:4096] + bytes((i * 7) % 251 for i in range(len(data) - 4096)))


@pytest.mark.parametrize("damage", [truncate, garbage, scribble])
def test_a_damaged_cache_is_renamed_aside_and_the_job_goes_on(built, uncached, caplog, damage):
    damage(built)
    damaged = built.read_bytes()
    wal = built.with_name(built.name + "-wal")
    wal_bytes = wal.read_bytes() if wal.exists() else None
    with caplog.at_level(logging.WARNING, logger="rlaif.score_cache"):
        cached = CachedBackend(FakeBackend(), built)
    [aside] = cached.set_aside
    assert aside.name.startswith("cache.sqlite.damaged-") and aside.read_bytes() == damaged  # kept, byte for byte
    if wal_bytes is not None:  # its side file goes with it, so it is never replayed into the fresh cache
        assert aside.with_name(aside.name + "-wal").read_bytes() == wal_bytes
    [warning] = caplog.records
    assert str(built) in warning.getMessage() and str(aside) in warning.getMessage()
    assert "moved it to" in warning.getMessage()
    pd.testing.assert_frame_equal(label(cached), uncached)
    assert (cached.hits, cached.misses) == (0, PROMPTS)
    cached.close()
    rerun = CachedBackend(FakeBackend(), built)  # the fresh cache in its place works as a cache
    pd.testing.assert_frame_equal(label(rerun), uncached)
    assert (rerun.hits, rerun.misses, rerun.set_aside) == (PROMPTS, 0, [])


@pytest.mark.parametrize("layout", [
    "CREATE TABLE scores (id INTEGER PRIMARY KEY, value REAL); INSERT INTO scores VALUES (1, 0.5)",
    "CREATE TABLE scores (key TEXT, logprobs TEXT)",  # no primary key: a key could hold two different values
    "CREATE TABLE t (key TEXT PRIMARY KEY, logprobs TEXT); CREATE VIEW scores AS SELECT * FROM t",
])
def test_a_scores_table_of_another_layout_is_set_aside_not_written_into(tmp_path, uncached, caplog, layout):
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(layout)
    db.close()
    original = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="rlaif.score_cache"):
        cached = CachedBackend(FakeBackend(), path)
    [aside] = cached.set_aside
    assert aside.read_bytes() == original
    assert "scores" in caplog.text and str(path) in caplog.text
    pd.testing.assert_frame_equal(label(cached), uncached)


def test_stored_values_that_are_not_scores_are_misses_never_numbers(built, uncached, caplog):
    bad = ["not json", "[-0.5]", "[-0.5, -0.5, -0.5]", "[Infinity, -0.5]", "[NaN, -0.5]", '["-0.5", "-0.5"]',
           "[true, false]", "null", "{}", "[[-0.5], [-0.5]]", "[" * 100000]
    with sqlite3.connect(built) as db:
        keys = [key for key, in db.execute("SELECT key FROM scores ORDER BY key")]
        db.executemany("UPDATE scores SET logprobs = ? WHERE key = ?",
                       [(bad[i % len(bad)], key) for i, key in enumerate(keys)])
        db.execute("UPDATE scores SET logprobs = x'00ff' WHERE key = ?", keys[:1])  # not even text
    db.close()
    fake = FakeBackend()
    cached = CachedBackend(fake, built)
    with caplog.at_level(logging.WARNING, logger="rlaif.score_cache"):
        pd.testing.assert_frame_equal(label(cached), uncached)
    assert (cached.hits, cached.misses, cached.invalid, cached.set_aside) == (0, PROMPTS, PROMPTS, [])
    assert len(fake.prompts_seen) == PROMPTS and str(built) in caplog.text and len(caplog.records) == 1
    cached.close()
    rerun = CachedBackend(FakeBackend(), built)  # overwritten with the scores just computed
    pd.testing.assert_frame_equal(label(rerun), uncached)
    assert (rerun.hits, rerun.invalid) == (PROMPTS, 0)


def test_stored_generations_of_the_wrong_shape_are_made_again(tmp_path):
    path = tmp_path / "cache.sqlite"
    first = CachedBackend(FakeBackend(), path)
    made = first.generate(["a prompt", "another"], n=2)
    first.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE scores SET logprobs = ?", (json.dumps(["only one"]),))
    db.close()
    again = CachedBackend(FakeBackend(), path)
    assert again.generate(["a prompt", "another"], n=2) == made and again.invalid == 2


@pytest.mark.parametrize("fresh", [False, True], ids=["existing cache", "new file"])
def test_a_cache_locked_by_another_process_stops_with_a_clear_error_before_any_work(tmp_path, built, fresh):
    path = tmp_path / "new.sqlite" if fresh else built
    before = path.read_bytes() if path.exists() else None
    fake = FakeBackend()
    with locked(path):
        started = time.monotonic()
        with pytest.raises(CacheLockedError, match="--no-cache") as error:
            CachedBackend(fake, path)
        assert time.monotonic() - started < 5
    assert isinstance(error.value, RuntimeError) and str(path) in str(error.value)
    assert "locked by another process" in str(error.value) and "\n" not in str(error.value)
    assert fake.calls == 0 and not list(tmp_path.glob("*.damaged-*"))  # locked is not damaged: nothing moved
    if before is not None:
        assert path.read_bytes() == before


def test_a_lock_taken_mid_run_costs_only_the_storing(tmp_path, uncached, caplog):
    path = tmp_path / "cache.sqlite"
    cached = CachedBackend(FakeBackend(), path)
    with locked(path), caplog.at_level(logging.WARNING, logger="rlaif.score_cache"):
        pd.testing.assert_frame_equal(label(cached), uncached)
    [warning] = caplog.records  # once, not once per batch
    assert str(path) in warning.getMessage() and "locked by another process" in warning.getMessage()
    cached.close()
    rerun = CachedBackend(FakeBackend(), path)  # nothing was stored, so nothing half-stored is read back
    pd.testing.assert_frame_equal(label(rerun), uncached)
    assert (rerun.hits, rerun.misses) == (0, PROMPTS)


def test_an_unusable_path_is_a_clear_error_not_a_damaged_file(tmp_path):
    (tmp_path / "a folder").mkdir()
    with pytest.raises(CacheError, match="cannot use score cache .*a folder.*--no-cache"):
        CachedBackend(FakeBackend(), tmp_path / "a folder")
    assert (tmp_path / "a folder").is_dir() and not list(tmp_path.glob("*.damaged-*"))


class SourcedFake(FakeBackend):
    source = "fake"


#: ``rlaif label`` in a process of its own, so stderr is what a user sees; the fake engine stands in for the model.
DRIVER = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from fakes import FakeBackend
from rlaif import score_cache
from rlaif.cli import label, main
label.build_backend = lambda args: type("SourcedFake", (FakeBackend,), {"source": "fake"})()
score_cache.BUSY_TIMEOUT = 0.5
sys.exit(main(sys.argv[1:]))
"""


def label_command_line(out, *options):
    return ["label", "--data", "examples", "--format", "examples", "--out", str(out), "--quiet", *options]


def rlaif_label(out, *options):
    command = [sys.executable, "-c", DRIVER, str(Path(__file__).parent), *label_command_line(out, *options)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr


def test_the_command_line_says_so_in_one_line_and_a_rerun_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(label_command, "build_backend", lambda args: SourcedFake())
    assert main(label_command_line(tmp_path / "plain.jsonl", "--no-cache")) == 0
    expected = pd.read_json(tmp_path / "plain.jsonl", lines=True)
    cache = tmp_path / "shared.sqlite"
    cache.write_bytes(b"garbage" * 1000)
    code, err = rlaif_label(tmp_path / "damaged.jsonl", "--cache", str(cache))
    [aside] = tmp_path.glob("shared.sqlite.damaged-*")
    assert code == 0 and "Traceback" not in err
    assert f"score cache {cache} is not a readable SQLite file" in err and f"moved it to {aside}" in err
    pd.testing.assert_frame_equal(pd.read_json(tmp_path / "damaged.jsonl", lines=True), expected)
    with locked(cache):
        code, err = rlaif_label(tmp_path / "locked.jsonl", "--cache", str(cache))
    assert code == 2 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert str(cache) in line and "locked by another process" in line and "--no-cache" in line
    assert main(label_command_line(tmp_path / "locked.jsonl", "--cache", str(cache))) == 0  # the same, once free
    pd.testing.assert_frame_equal(pd.read_json(tmp_path / "locked.jsonl", lines=True), expected)
