"""The files of a run folder besides checkpoints: the lock, ``provenance.json`` and ``metrics.csv``.

- :class:`RunLock`: an exclusive ``flock`` on ``RUN_DIR/.lock`` held for the run's lifetime, so a
  second ``train`` into the same folder stops with a clear error instead of mixing its config and
  weights with the first run's. The operating system drops the lock when the process ends, however
  it ends (Ctrl-C, SIGKILL), so a killed run never leaves a stale lock behind.
- :func:`record_provenance`: appends one entry per start or resume to ``provenance.json``: the
  dataset's path and content digest, galmoco's version and git commit, Python, torch and CUDA
  versions, the host, the world size and the command line.
- :func:`write_metrics` / :func:`read_metrics`: ``metrics.csv``, one row per epoch.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.files import atomic_output, atomic_write_text

__all__ = ["LOCK_NAME", "METRIC_COLUMNS", "PROVENANCE_NAME", "RunLock", "git_commit", "provenance",
           "read_metrics", "record_provenance", "store_digest", "write_metrics"]

#: the lock file in a run folder (its presence means nothing: the lock is the ``flock`` on it)
LOCK_NAME = ".lock"
#: the provenance record in a run folder
PROVENANCE_NAME = "provenance.json"
#: columns of RUN_DIR/metrics.csv (one row per epoch)
METRIC_COLUMNS = ("epoch", "step", "loss", "loss_contrastive", "loss_recon", "lr", "images_per_s",
                  "knn_acc", "time")
#: the store datasets whose bytes make up its content digest (cached sky masks are derived: left out)
_DIGEST_DATASETS = ("images", "weights", "catalog")
#: objects hashed per read (bounded memory for large stores)
_DIGEST_CHUNK = 1024


class RunLock:
    """Exclusive lock on a run folder, as a context manager (``with RunLock(run_dir): ...``).

    Args:
        run_dir: the run folder (created if needed).

    Raises:
        GalmocoError: on entry, when another process holds the lock (naming its pid and host).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fh: Any = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise GalmocoError(f"{self.path.parent}: another galmoco train ({holder}) is writing this run "
                               "folder; wait for it to finish or use another -o folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        only_lock = [p.name for p in self.path.parent.iterdir()] == [LOCK_NAME]
        if exc_type is not None and self._created and only_lock:
            # a run that failed before writing anything leaves no folder behind (still under the lock)
            self.path.unlink()
            self.path.parent.rmdir()
        self.release()

    def release(self) -> None:
        """Drop the lock (closing the file releases the ``flock``)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def store_digest(store_path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) digest of a packed store's content: the bytes of ``/images``, ``/weights`` and
    ``/catalog`` in order, so it changes when any pixel, weight or catalogue value changes but not when
    sky masks are cached into the file. Returns ``"blake2b:<32 hex digits>"``."""
    from tqdm import tqdm

    digest = hashlib.blake2b(digest_size=16)
    with h5py.File(store_path, "r") as h5:
        for name in _DIGEST_DATASETS:
            if name not in h5:
                continue
            data = h5[name]
            digest.update(f"{name}{data.shape}{data.dtype}".encode())
            for start in tqdm(range(0, data.shape[0], _DIGEST_CHUNK), desc=f"digest {name}", unit="chunk",
                              leave=False, disable=None):
                _hash_array(digest, data[start:start + _DIGEST_CHUNK])
    return f"blake2b:{digest.hexdigest()}"


def _hash_array(digest: Any, array: np.ndarray) -> None:
    """Feed an array's values to ``digest``: raw bytes for numbers, UTF-8 for variable-length strings
    (whose raw bytes would be pointers), field by field for a table."""
    if array.dtype.names:
        for name in array.dtype.names:
            _hash_array(digest, array[name])
    elif array.dtype.kind == "O":
        digest.update(b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()))
    else:
        digest.update(np.ascontiguousarray(array).tobytes())


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: galmoco's source), with ``+dirty`` when
    tracked files are modified; ``None`` for an installed package or where git is missing."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(store_path: str | os.PathLike, device: torch.device, world: int,
               resume: bool) -> dict[str, Any]:
    """One provenance entry: what a run (or a resume) started from, and with which software.

    Args:
        store_path: the packed store trained on.
        device: this process's training device.
        world: number of processes.
        resume: whether this start continues a run.
    """
    store_path = Path(store_path).resolve()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resume": resume,
        "command": shlex.join(sys.argv),
        "dataset": str(store_path),
        "dataset_digest": store_digest(store_path),
        "galmoco_version": __version__,
        "galmoco_git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "world_size": world,
        "host": socket.gethostname(),
    }


def record_provenance(run_dir: str | os.PathLike, entry: dict[str, Any]) -> Path:
    """Append ``entry`` to ``RUN_DIR/provenance.json`` (``{"runs": [...]}``, oldest first), atomically."""
    path = Path(run_dir) / PROVENANCE_NAME
    runs: list[dict[str, Any]] = []
    if path.is_file():
        try:
            runs = list(json.loads(path.read_text())["runs"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GalmocoError(f"{path}: not a galmoco provenance record ({exc}); move it away") from None
    return atomic_write_text(path, json.dumps({"runs": [*runs, entry]}, indent=1) + "\n")


def write_metrics(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` (header :data:`METRIC_COLUMNS`) atomically."""
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_metrics(path: str | os.PathLike, upto_epoch: int) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` up to ``upto_epoch`` (numbers as floats, ``epoch``/``step`` as ints,
    empty cells as ``""``); ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open() as fh:
        rows = [{k: (float(v) if v not in ("", None) else "") for k, v in row.items()}
                for row in csv.DictReader(fh)]
    for r in rows:
        r["epoch"], r["step"] = int(r["epoch"]), int(r["step"])
    return [r for r in rows if r["epoch"] <= upto_epoch]
