"""Atomic output files: every file galmoco writes appears whole under its final name, or not at all.

A writer gets a temporary name in the destination's folder (same file system, so the final
``os.replace`` is atomic), writes there, and the file is renamed into place only when the writer
returns normally; on any exception the temporary file is removed. Files get the permissions a
plain ``open(path, "w")`` would give (``0o666`` less the process umask), so collaborators in a
shared group folder can read runs and reports (``tempfile.mkstemp`` alone would leave ``0600``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "default_file_mode"]

_umask_lock = threading.Lock()


def _current_umask() -> int:
    """The process umask; from ``/proc`` where there is one, since the portable way (set it, read the old
    value, set it back) changes it for every thread for a moment."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)
    with _umask_lock:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def default_file_mode() -> int:
    """``0o666`` less the current umask: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it becomes ``path`` atomically.

    Args:
        path: the final file name.
        make_parents: create missing parent folders first.

    Yields:
        The temporary file's path (an empty file exists there; writers may replace or remove it).
        Its name starts with ``.`` and keeps the final suffix, so format-by-suffix writers work.

    Raises:
        Whatever the writer raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
