"""Rows from data files: a local JSON, JSONL(.gz), CSV or Parquet file by its extension, or anything
``datasets.load_dataset`` reads (a folder, a hub name).

A file that cannot be read to its end (cut short in transfer, damaged, unreadable, not a file at
all) or that changes while it is read is a ``DataError`` naming the file and the last row read,
never a library's traceback; a record that is not valid JSON is handed on as a ``DataError`` in
its row, so ``skip_bad`` can skip one bad line and go on.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlaif.pairs import DataError


def read_rows(source: Any, *, json_field: str | None = None, split: str = "train",
              **load_kwargs) -> Iterator[tuple[int, Any]]:
    """Yield (row number, record); row numbers are 1-based (a JSONL line, a JSON list position, a table row)."""
    shown = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.exists() and not (path.is_file() or path.is_dir()):
        raise DataError("is not a regular file (a FIFO, socket or device?); rlaif reads files and folders",
                        source=shown)
    before = _state(path)
    row = 0
    try:
        for row, record in _rows(source, json_field=json_field, split=split, **load_kwargs):
            yield row, record
    except DataError:
        raise
    except _read_errors() as exc:
        raise DataError(_why_unreadable(exc) + (f" (after row {row})" if row else ""), source=shown) from None
    if before is not None and _state(path) != before:
        raise DataError("changed while it was read (is something still writing it?); load it again once it "
                        "is complete", source=shown)


def _state(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or appended to; None for folders and non-files."""
    if path is None or not path.is_file():
        return None
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, ValueError)
    try:
        import pyarrow

        errors += (pyarrow.ArrowException,)
    except ImportError:
        pass
    return errors


def _why_unreadable(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "no permission to read it"
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"the compressed file is damaged or cut short ({exc})"
    if isinstance(exc, IsADirectoryError):
        return "is a folder where a file was expected"
    return f"cannot be read: {str(exc) or type(exc).__name__}"


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    # Bad bytes are kept (as escapes) and checked line by line: a strict decoder reads
    # ahead, so it would blame an earlier line and stop the whole file.
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            # Errors are handed on, not raised, so that skip_bad can skip one bad line and go on.
            try:
                line.encode("utf-8", "surrogateescape").decode("utf-8")
                record = json.loads(line)
            except UnicodeDecodeError as exc:
                record = DataError(f"not valid UTF-8 ({exc.reason})")
            except ValueError as exc:  # JSONDecodeError, or a number too long to convert
                record = DataError(f"not valid JSON ({getattr(exc, 'msg', exc)})")
            yield line_no, record


def _read_json(path: Path, field: str | None) -> Iterator[tuple[int, Any]]:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not a valid UTF-8 JSON file ({exc})", source=str(path)) from None
    if field is not None and isinstance(data, dict):
        if field not in data:
            raise DataError("missing", source=str(path), field_name=field)
        data = data[field]
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of records, got {type(data).__name__}", source=str(path))
    yield from enumerate(data, start=1)


def _read_table(path: Path) -> Iterator[tuple[int, Any]]:
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    for row_no, record in enumerate(frame.to_dict(orient="records"), start=1):
        yield row_no, record


def _read_hf(source: Any, split: str, **load_kwargs) -> Iterator[tuple[int, Any]]:
    """Rows of a datasets.Dataset, or of ``datasets.load_dataset(source)`` (hub name or folder)."""
    import datasets

    if isinstance(source, str):
        source = datasets.load_dataset(source, split=split, **load_kwargs)
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise DataError(f"split {split!r} not found; it has {sorted(source)}")
        source = source[split]
    yield from enumerate(source, start=1)


def _rows(source: Any, *, json_field: str | None = None, split: str = "train",
          **load_kwargs) -> Iterator[tuple[int, Any]]:
    """(row number, record) from a file by extension, else through ``datasets``."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        path = Path(source)
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _read_jsonl(path)
        if name.endswith((".json", ".json.gz")):
            return _read_json(path, json_field)
        if name.endswith((".csv", ".parquet")):
            return _read_table(path)
        raise DataError("unknown file type: expected .json, .jsonl(.gz), .csv or .parquet", source=str(path))
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_a_path(source)):
        if not Path(source).exists():
            raise DataError("no such file or folder", source=str(source))
    return _read_hf(str(source) if isinstance(source, os.PathLike) else source, split, **load_kwargs)


def _looks_like_a_path(source: str) -> bool:
    """A name with a file extension or a leading ./, / or ~ is a path, never a hub dataset."""
    return source.startswith((".", "/", "~")) or source.lower().endswith(
        (".json", ".jsonl", ".gz", ".csv", ".parquet"))
