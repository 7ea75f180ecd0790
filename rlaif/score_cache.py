"""A disk cache in front of any backend: each prompt is scored once per (engine settings, labels).

Keyed by SHA-256 of (backend fingerprint, rendered prompt, candidate labels), so a
changed model, dtype, template or label set misses, and everything else hits.
SQLite in WAL mode: each batch of results is one committed transaction, readers
never see half a batch, and a killed process loses at most the batch in flight.
Only finite log-probs are stored; a failure is never cached, so it is retried.
Generations (rationales) are cached too, keyed by their settings and seed.

A cache is only a shortcut, so a damaged one never stops a job nor feeds it a wrong number:
a file SQLite cannot read, that fails its integrity check, or whose ``scores`` table has
other columns is renamed aside (``NAME.damaged-<UTC time>``, with its ``-wal``/``-shm``
side files, never deleted) with a warning, and a fresh cache takes its place; a stored
value that is not what was asked for (not a list of finite floats, one per label) is a
miss, scored again and overwritten. A cache another process keeps locked past
``BUSY_TIMEOUT`` stops the job at open with ``CacheLockedError``, before any prompt is scored;
a lock met later, mid-run, only costs that batch its storing (a warning says so), since
the scores just computed are right and the job should not die for a shortcut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.backends.base import LabelBackend, WrappedBackend

log = logging.getLogger(__name__)

#: Seconds to wait for another process's lock (SQLite's busy timeout): jobs sharing a cache
#: hold it for one batch's commit at a time, so a longer wait means a stuck or foreign holder.
BUSY_TIMEOUT = 10.0

_TABLE = "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, logprobs TEXT NOT NULL)"
_COLUMNS = [("key", "TEXT", 1), ("logprobs", "TEXT", 0)]  # (name, type, primary key) as table_info gives them
_LOCKED_CODES, _DAMAGED_CODES = {5, 6}, {11, 26}  # SQLITE_BUSY, SQLITE_LOCKED; SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGED_MESSAGES = ("file is not a database", "database disk image is malformed")  # Python 3.10 has no codes
_WHAT_TO_DO = "run with --no-cache, or choose another --cache file"


class CacheError(RuntimeError):
    """The score cache file cannot be used at all; the message names it and what to do."""


class CacheLockedError(CacheError):
    """Another process holds the score cache's lock for longer than ``BUSY_TIMEOUT``."""


class _Damaged(Exception):
    """The file at the cache's path is not a sound score cache (the message says how)."""


def _kind(exc: sqlite3.Error) -> str:
    """'locked', 'damaged' or 'other', by SQLite's result code where Python gives it, else by message."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        code &= 0xFF  # an extended code carries its primary code in the low byte
        return "locked" if code in _LOCKED_CODES else "damaged" if code in _DAMAGED_CODES else "other"
    message = str(exc)
    return "locked" if "locked" in message else "damaged" if message.startswith(_DAMAGED_MESSAGES) else "other"


def _problem(db: sqlite3.Connection) -> str | None:
    """What makes an open file unfit to be a score cache, or None.

    integrity_check, not quick_check: it also proves that each index entry points at its own
    row, so a lookup by key cannot come back with another prompt's scores. It reads the whole
    file, once per open.
    """
    report = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
    if report != ["ok"]:
        return f"failed SQLite's integrity check: {'; '.join(map(str, report))}"
    kind = db.execute("SELECT type FROM sqlite_master WHERE name = 'scores' COLLATE NOCASE").fetchone()
    if kind is None:
        return None
    if kind[0] != "table":
        return f"has a {kind[0]} named scores, not a table"
    columns = [(name, str(type_).upper(), pk) for _, name, type_, _, _, pk in db.execute("PRAGMA table_info(scores)")]
    if columns != _COLUMNS:
        found = ", ".join(f"{name} {type_}{' PRIMARY KEY' if pk else ''}".strip() for name, type_, pk in columns)
        return f"has a scores table of columns ({found}), not (key TEXT PRIMARY KEY, logprobs TEXT)"
    return None


def _decoded(value: Any) -> Any:
    """A stored value as JSON, or None where it is not JSON text (None is never a valid value)."""
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def _finite_floats(value: Any, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value))


def _texts(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(isinstance(x, str) for x in value)


class CachedBackend(WrappedBackend):
    """Wraps a LabelBackend; ``hits`` and ``misses`` count prompts answered from disk or scored.

    What is not cached (tokens, limits, chat wrapping) is the wrapped engine's, at ``.backend``.
    ``invalid`` counts stored values that were unusable and so scored again; ``set_aside``
    lists where damaged cache files were moved. Raises ``CacheLockedError`` or ``CacheError``
    when the file cannot be used, before any prompt is scored.
    """

    def __init__(self, backend: LabelBackend, path: str | Path):
        super().__init__(backend)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.set_aside: list[Path] = []
        self._warned: set[str] = set()
        self._db = self._open()
        self._fingerprint = json.dumps(backend.fingerprint(), sort_keys=True, default=str)
        self.hits = self.misses = self.invalid = 0

    def _open(self) -> sqlite3.Connection:
        """A checked connection; a damaged file is first moved aside, so a fresh cache takes its place."""
        try:
            return self._connect()
        except _Damaged as damage:
            self._move_aside(str(damage))
        try:
            return self._connect()
        except _Damaged as damage:  # a file made just now: something else keeps writing there
            raise CacheError(f"score cache {self.path} {damage} again after the damaged one was moved aside; "
                             f"{_WHAT_TO_DO}") from None

    def _connect(self) -> sqlite3.Connection:
        db = None
        try:
            problem = self._inspect() if self.path.exists() else None
            if problem is None:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_TABLE)
                db.execute("BEGIN IMMEDIATE")  # takes the write lock and lets it go: a lock held elsewhere fails
                db.execute("ROLLBACK")  # here, before any work, not at the first batch's commit
                return db
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            kind = _kind(exc)
            if kind == "locked":
                raise CacheLockedError(
                    f"score cache {self.path} is locked by another process (waited {BUSY_TIMEOUT:g} s); wait for "
                    f"that process to finish, {_WHAT_TO_DO}") from None
            if kind != "damaged":
                raise CacheError(f"cannot use score cache {self.path}: {exc}; {_WHAT_TO_DO}") from None
            raise _Damaged(f"is not a readable SQLite file ({exc})") from None
        raise _Damaged(problem)

    def _inspect(self) -> str | None:
        """``_problem`` through a read-only connection: one that writes would checkpoint or delete
        the file's -wal on closing, and the damaged file is to be set aside as it was found."""
        reader = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            return _problem(reader)
        finally:
            reader.close()

    def _move_aside(self, problem: str) -> None:
        """Renames the file and its -wal/-shm/-journal side files (which SQLite would otherwise replay
        into the fresh file) to ``NAME.damaged-<UTC time>``: never deleted, it may hold days of scores."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside, n = self.path.with_name(f"{self.path.name}.damaged-{stamp}"), 1
        while aside.exists():
            aside, n = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}"), n + 1
        for side in ("", "-wal", "-shm", "-journal"):
            try:
                Path(f"{self.path}{side}").rename(f"{aside}{side}")
            except FileNotFoundError:
                continue  # no such side file, or another process moved it first
            except OSError as exc:
                raise CacheError(f"score cache {self.path} {problem}, and could not be renamed aside ({exc}); "
                                 f"move it away yourself, {_WHAT_TO_DO}") from None
        self.set_aside.append(aside)
        log.warning("score cache %s %s: moved it to %s and started an empty cache in its place; the job goes on, "
                    "scoring what the cache would have answered", self.path, problem, aside)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _failed(self, exc: sqlite3.Error, doing: str) -> bool:
        """Handles an error met mid-run; True where the cache was damaged and is now a fresh, empty one."""
        kind = _kind(exc)
        if kind == "damaged":
            self._db.close()
            self._move_aside(f"became unreadable while {doing} ({exc})")
            self._db = self._open()
            return True
        why = "is locked by another process" if kind == "locked" else f"failed ({exc})"
        self._warn_once(f"{kind}:{exc}", "score cache %s %s while %s; going on without it for that batch "
                        "(its scores are computed, never guessed; further such batches are not reported)",
                        self.path, why, doing)
        return False

    def _key(self, prompt: str, labels: Sequence[str]) -> str:
        payload = json.dumps([self._fingerprint, prompt, list(labels)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    def _lookup(self, keys: Sequence[str], valid: Callable[[Any], bool]) -> dict[str, Any]:
        """The stored values that pass ``valid``; anything else, or a cache that fails, is a miss."""
        found: dict[str, Any] = {}
        try:
            rows = []
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start:start + 500]
                rows += self._db.execute(
                    f"SELECT key, logprobs FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc, "reading")
            return found
        for key, value in rows:
            value = _decoded(value)
            if valid(value):
                found[key] = value
            else:
                self.invalid += 1
                self._warn_once("invalid", "score cache %s holds values that are not what was stored there "
                                "(not JSON, or the wrong type or length); they are scored again and overwritten",
                                self.path)
        return found

    def _store(self, items: Sequence[tuple[str, Any]]) -> None:
        rows = [(key, json.dumps(value)) for key, value in items]
        for _ in range(2):  # a second time only into the fresh file that replaced a damaged one
            try:
                with self._db:  # one transaction: all of a batch, or none of it
                    self._db.executemany("INSERT OR REPLACE INTO scores (key, logprobs) VALUES (?, ?)", rows)
                return
            except sqlite3.Error as exc:
                if not self._failed(exc, "writing"):
                    return

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        keys = [self._key(prompt, labels) for prompt in prompts]
        found = self._lookup(keys, lambda value: _finite_floats(value, len(labels)))
        missing = [i for i, key in enumerate(keys) if key not in found]
        result = np.empty((len(prompts), len(labels)), dtype=np.float64)
        if missing:
            scored = self.backend.label_logprobs([prompts[i] for i in missing], labels)
            result[missing] = scored
            self._store([(keys[i], [float(x) for x in row]) for i, row in zip(missing, scored)
                         if np.all(np.isfinite(row))])
        for i, key in enumerate(keys):
            if key in found:
                result[i] = found[key]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return result

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """Generations, cached like scores (sampled ones too: the seed is part of the key)."""
        settings = json.dumps({"generate": [max_new_tokens, temperature, n, seed, list(stop)]})
        keys = [self._key(prompt, [settings]) for prompt in prompts]
        found = self._lookup(keys, lambda value: _texts(value, n))
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            made = self.backend.generate([prompts[i] for i in missing], max_new_tokens=max_new_tokens,
                                         temperature=temperature, n=n, seed=seed, stop=stop)
            self._store([(keys[i], texts) for i, texts in zip(missing, made)])
            found.update((keys[i], texts) for i, texts in zip(missing, made))
        return [found[key] for key in keys]

    def close(self) -> None:
        self._db.close()
