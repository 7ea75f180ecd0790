"""Writing files so that a full disk, an I/O error or a read-only folder never leaves half a file
and always says which file, why, and what to do (``WriteError``, a one-line CLI error).

Final files are written to a temporary name beside them, fsynced and renamed over the old one:
a reader sees the old file or the new one, never half, and a failed write leaves the old file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

#: What to do about a failed write during a run.
RERUN = "free space (or make the folder and file writable) and run the same command again to resume"


class WriteError(RuntimeError):
    """A file that could not be written (ENOSPC, EIO, EROFS, ...): named, with the OS's reason and what to do."""

    def __init__(self, path: str | Path, error: OSError, advice: str):
        self.path, self.error = Path(path), error
        super().__init__(f"{path}: cannot write it ({error.strerror or error}); {advice}")


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written: a nearly full disk takes part of it, then refuses."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or what a plain ``open`` would give (mkstemp's are 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it. On failure the temporary
    file is removed, the file at ``path`` is unchanged, and ``WriteError`` names ``path``."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _mode_for(path))
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(path, exc, "the file there, if any, is unchanged; free space (or make the folder and "
                                        "file writable) and try again") from exc
        raise
