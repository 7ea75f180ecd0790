"""Where finished labels go: appended to disk as they complete, so an interrupted run resumes.

The journal is a JSONL file (the output itself for ``.jsonl``; ``OUT.partial.jsonl``
for ``.parquet``, converted atomically at the end). Each batch is flushed and
fsynced; a line cut off by a crash is dropped on the next start. Rows carry a
``run_id`` (hash of model, template and settings): resuming into a file written
by a different run is refused rather than mixing labels.

A write that fails (full disk, I/O error, read-only folder) stops the run with a
``rlaif.file_writes.WriteError`` naming the file: a failed step is cut back off the journal, so it
holds only whole steps, and a failed final write leaves the journal as it was,
so the same command, run again once there is room, resumes.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlaif.file_writes import RERUN, WriteError, atomic_write_bytes, write_all
from rlaif.labels_table import RETRY_FLAGS, pair_hash
from rlaif.output_lock import OutputLock
from rlaif.pairs import PreferencePair

OUTPUT_SUFFIXES = (".jsonl", ".parquet")


class StoreError(RuntimeError):
    """An output file that cannot be resumed into as asked."""


def journal_path(out: Path) -> Path:
    """Where finished steps are appended: the output itself for .jsonl, ``OUT.partial.jsonl`` for .parquet."""
    return out if out.suffix == ".jsonl" else out.with_name(out.name + ".partial.jsonl")


def read_journal(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Complete rows of a journal; a trailing partial line (a crash mid-write) is ignored,
    and with ``repair`` also cut off on disk."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    rows = []
    for line_no, line in enumerate(complete.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}: line {line_no} is not valid JSON ({exc.msg}); "
                                 "it was not written by rlaif, or was edited: use --fresh to start over") from None
    if repair and len(complete) != len(data):
        try:
            os.truncate(path, len(complete))  # needs no free space, unlike a rewrite: works on a full disk
        except OSError as exc:
            raise WriteError(path, exc, f"its last line is incomplete and could not be cut off; {RERUN}") from exc
    return rows


class LabelStore:
    """Appends rows to the journal; ``done`` holds the rows of earlier runs with the same run_id."""

    def __init__(self, out: str | Path, run_id: str, *, fresh: bool = False):
        self.out = Path(out)
        if self.out.suffix not in OUTPUT_SUFFIXES:
            raise StoreError(f"{self.out}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.journal = journal_path(self.out)
        self.run_id = run_id
        if fresh:
            self.journal.unlink(missing_ok=True)
            self.out.unlink(missing_ok=True)
        self.done: dict[str, dict[str, Any]] = {}
        if self.journal.exists():
            source, rows = self.journal, read_journal(self.journal, repair=False)
        elif self.out.exists():  # a finished .parquet run: resume from the file itself
            source, rows = self.out, label_rows(self.out)
        else:
            source, rows = self.out, []
        for row in rows:
            if row.get("run_id") != run_id:
                raise StoreError(
                    f"{source} holds labels from another run (model, template or settings differ: "
                    f"run_id {row.get('run_id')} vs {run_id}); pass --fresh to overwrite, or another --out")
            self.done[row["id"]] = row
        if self.journal.exists():
            read_journal(self.journal, repair=True)  # only now, once the file is known to be ours

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append one step's rows, whole: Ctrl-C and SIGTERM wait until they are on disk."""
        lines = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        stops = {signal.SIGINT, signal.SIGTERM}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            self._append_whole(lines)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _append_whole(self, lines: bytes) -> None:
        """Write and fsync ``lines``; if that fails, cut the journal back to its size before, so it holds
        whole steps only (should even that fail, the torn last line is dropped on resume)."""
        kept = f"every finished step before this one is kept there; {RERUN}"
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(self.journal, exc, kept) from exc
        try:
            size = os.fstat(fd).st_size
            try:
                write_all(fd, lines)
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except OSError:
                    pass
                raise WriteError(self.journal, exc, kept) from exc
        finally:
            os.close(fd)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """Write the final output atomically: this job's rows in input order, then any rows
        an earlier, larger job of the same run labeled (kept, never thrown away)."""
        ids = {row["id"] for row in rows}
        try:
            write_labels(rows + [row for pair_id, row in self.done.items() if pair_id not in ids], self.out)
        except WriteError as exc:
            where = "as it was" if self.journal == self.out else f"in {self.journal}"
            raise WriteError(self.out, exc.error, f"every labeled step is kept {where}; {RERUN} "
                                                  "(only this file is left to write)") from exc
        if self.out.suffix == ".parquet":
            self.journal.unlink(missing_ok=True)


def run_in_steps(pairs: Sequence[PreferencePair], this_run: str, out: str | Path | None, fresh: bool,
                 pairs_per_step: int, progress: bool,
                 label_step: Callable[[list[PreferencePair]], list[dict[str, Any]]]) -> pd.DataFrame:
    """Fixed slices of ``pairs``; each slice's rows appended to the store as it finishes; resumable."""
    ids = [pair.id for pair in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pair ids must be unique; {duplicate!r} appears more than once")
    lock = OutputLock(out).acquire() if out is not None else None  # before anything is read or removed
    try:
        return _run_steps(pairs, ids, LabelStore(out, this_run, fresh=fresh) if out is not None else None,
                          pairs_per_step, progress, label_step)
    finally:
        if lock:
            lock.release()


def _run_steps(pairs: Sequence[PreferencePair], ids: list[str], store: LabelStore | None, pairs_per_step: int,
               progress: bool, label_step: Callable[[list[PreferencePair]], list[dict[str, Any]]]) -> pd.DataFrame:
    done = dict(store.done) if store else {}
    by_id = {pair.id: pair for pair in pairs}
    for pair_id, row in list(done.items()):
        if pair_id in by_id and row.get("pair_hash") not in (None, pair_hash(by_id[pair_id])):
            raise StoreError(f"{store.out}: the pair with id {pair_id!r} there differs from the one being labeled "
                             "now (different data under the same ids?); use another --out, or --fresh")
        if set(row.get("flags") or ()) & set(RETRY_FLAGS):
            del done[pair_id]
    with tqdm(total=len(pairs), initial=sum(pair_id in done for pair_id in ids), desc="labeling pairs",
              unit="pair", disable=not progress) as bar:
        for start in range(0, len(pairs), pairs_per_step):
            step = [pair for pair in pairs[start:start + pairs_per_step] if pair.id not in done]
            if not step:
                continue
            rows = label_step(step)
            if store:
                store.append(rows)
            done.update((row["id"], row) for row in rows)
            bar.update(len(step))
    ordered = [done[pair_id] for pair_id in ids]
    if store:
        store.finish(ordered)
    return pd.DataFrame(ordered)


def write_labels(rows: list[dict[str, Any]], out: Path) -> None:
    """Write label rows to ``out`` (.jsonl or .parquet) atomically: the old file or the new one, never half."""
    if out.suffix == ".parquet":
        buffer = io.BytesIO()
        metadata_as_json(pd.DataFrame(rows)).to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        atomic_write_bytes(out, b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows))


def write_labels_frame(labels: pd.DataFrame, out: Path) -> None:
    """``write_labels`` for a labels table built in pandas: NaN written as null, numpy scalars as numbers."""
    write_labels([{key: _plain(value) for key, value in row.items()} for row in labels.to_dict("records")], out)


def metadata_as_json(labels: pd.DataFrame) -> pd.DataFrame:
    """Columnar formats need one type per column; metadata keys vary by source, so store JSON text."""
    frame = labels.copy()
    if "metadata" in frame:
        frame["metadata"] = frame["metadata"].map(lambda m: json.dumps(m, ensure_ascii=False))
    return frame


def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels file (JSONL or Parquet, or a folder of Parquet files) as a DataFrame, one row per pair."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such labels file")
    if path.suffix == ".parquet" or path.is_dir():  # a folder of Parquet files: Ray Data's output
        frame = pd.read_parquet(path)
        # list cells come back as arrays: lists, as in JSONL
        for column in frame.columns[frame.dtypes == np.dtype(object)]:
            frame[column] = frame[column].map(lambda cell: cell.tolist() if isinstance(cell, np.ndarray) else cell)
        if "metadata" in frame:
            frame["metadata"] = frame["metadata"].map(json.loads)
        return frame
    if path.suffix != ".jsonl":
        raise StoreError(f"{path}: labels files are .jsonl or .parquet")
    return pd.DataFrame(read_journal(path, repair=False))


def label_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a labels file as plain Python values, as a journal holds them: exact floats,
    lists (not arrays), None (not NaN)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such labels file")
        return read_journal(path, repair=False)
    return [{key: _plain(value) for key, value in row.items()} for row in read_labels(path).to_dict("records")]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def to_dataset(labels: pd.DataFrame):
    """A labels table as a ``datasets.Dataset`` (metadata as a JSON string: its keys vary by source)."""
    import datasets

    return datasets.Dataset.from_pandas(metadata_as_json(labels), preserve_index=False)
