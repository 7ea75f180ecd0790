"""One writer per output: an OS lock on ``OUT.lock`` held while a run writes ``OUT``.

Two runs started on the same ``--out`` would both label every pair and append to one journal.
The second is refused at once, with the holder's pid. The lock is ``flock`` on an open file, so
the OS releases it when the holder exits in any way (SIGKILL included): no stale lock is ever
left to clear by hand. The file is removed when the holder finishes; a process that opened it
just before must then find that the path names another file, and tries again.

Locks are re-entrant within a process (the command line takes the lock before it writes
``OUT.config.yaml``; the store takes it again), and counted, so the last release frees it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rlaif.file_writes import RERUN, WriteError


class OutputInUseError(RuntimeError):
    """Another process is writing the same output."""


_held: dict[Path, tuple[int, int]] = {}  # lock path -> (file descriptor, times taken)


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".lock")


class OutputLock:
    """``with OutputLock(out):`` this process is the only writer of ``out`` (``OutputInUseError`` if another is)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = lock_path(self.out).resolve()

    def acquire(self) -> OutputLock:
        if self.path in _held:
            fd, count = _held[self.path]
            _held[self.path] = (fd, count + 1)
            return self
        try:  # a full disk or a read-only folder: said before any work, with nothing left locked
            fd = self._lock()
        except OSError as exc:
            raise self._cannot_write(exc) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise self._cannot_write(exc) from exc
        _held[self.path] = (fd, 1)
        return self

    def _cannot_write(self, error: OSError) -> WriteError:
        return WriteError(self.path, error, f"the lock that keeps a second run off {self.out} cannot be made there; "
                                            f"{RERUN}")

    def _lock(self) -> int:
        """An open descriptor of the lock file, flock-ed by this process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputInUseError(f"{self.out} is being written by another rlaif process (pid {holder}); "
                                       f"wait for it to finish, stop it, or choose another --out") from None
            except OSError:  # not held elsewhere, but not lockable either: say so without leaking the descriptor
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: try the new one
        return fd

    def release(self) -> None:
        fd, count = _held[self.path]
        if count > 1:
            _held[self.path] = (fd, count - 1)
            return
        del _held[self.path]
        self.path.unlink(missing_ok=True)  # while still locked, so no one else holds this file
        os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
