"""The partial HDF5 store a pack appends to: exclusive creation, its ``flock``, resume and the writes.

A pack writes ``<out>.partial`` (:class:`PartialStore`), locked by its writer from creation to rename, so
a second pack on the same output is refused (:func:`existing_partial_error`) instead of truncating it,
and ``attrs["n_written"]`` says which objects are safely on disk (written by
:func:`galmoco.io.pack.pack_cutouts`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.files import default_file_mode
from galmoco.io.fits import Cutout
from galmoco.io.store import BASE_DTYPE

__all__ = ["PartialStore", "existing_partial_error"]

#: what ``os.link`` raises on a file system without hard links (FAT: EPERM; others: not supported)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


def existing_partial_error(path: Path, resume: bool) -> GalmocoError:
    """The error for an existing partial pack: another run is writing it (its lock is held), or it was
    left by an interrupted run (no lock), which ``--resume`` continues.

    Args:
        path: the ``.partial`` file found in the way.
        resume: whether this run asked to resume it (then a free lock means it was busy a moment ago).

    Returns:
        The :class:`~galmoco.errors.GalmocoError` to raise, naming ``path`` and what to do.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # the other run finished or gave up meanwhile
        return GalmocoError(f"{path}: another pack finished or gave up while this one started; run again")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return GalmocoError(f"{path}: another galmoco pack is writing this file now; wait for it to finish, "
                            "or stop it and continue with --resume")
    finally:
        os.close(fd)
    if resume:  # the lock was held a moment ago and is free now
        return GalmocoError(f"{path}: another pack held this file a moment ago; run again")
    return GalmocoError(f"{path}: an interrupted pack is here; continue it with --resume or delete it")


def _new_partial(fd: int, file: str | Path, attrs: dict) -> h5py.File:
    """Lock ``fd`` (open on ``file``) and write a new, empty partial store with ``attrs`` into ``file``;
    on failure both are closed."""
    h5 = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h5 = h5py.File(file, "w", locking=False)
        h5.attrs.update(attrs)
        h5.flush()
        return h5
    except BaseException:
        if h5 is not None:
            h5.close()
        os.close(fd)
        raise


class PartialStore:
    """The partial HDF5 file being appended to, locked (``flock``) by this process from its creation to
    its rename, so a second pack on the same output is refused instead of truncating it.

    A new partial is written and flushed under a temporary name, locked, then linked to its final name
    (``os.link`` fails when that exists: exclusive creation), so the ``.partial`` is a valid, resumable
    file from the moment it appears (without hard links: created exclusively and written in place).
    Its image datasets are created when the stamp shape is decided (:meth:`set_shape`); a partial
    without them resumes from zero objects.
    HDF5's own file locking is off for it (the ``flock`` is the lock, and HDF5's would conflict with it).
    """

    def __init__(self, path: Path, fd: int, h5: h5py.File):
        """Take over an open, locked partial file, dropping rows written after its last flush.

        Args:
            path: the ``.partial`` file.
            fd: its descriptor holding the exclusive ``flock`` (closed by :meth:`close`).
            h5: the file opened for writing with HDF5 locking off.
        """
        self.path, self.fd, self.h5 = path, fd, h5
        self.n = int(h5.attrs["n_written"])
        if self.shape is not None:
            for name in ("images", "weights", "catalog"):  # drop rows written after the last flush
                self.h5[name].resize(self.n, axis=0)

    @classmethod
    def create(cls, path: Path, bands: tuple[str, ...], pad: bool) -> PartialStore:
        """Create a new partial file exclusively (fails when ``path`` exists) and lock it.

        On a file system without hard links (some network and FAT file systems) the name is created
        exclusively and the file written in place; there a kill in the moment before its header is
        flushed leaves a file that ``--resume`` reports as damaged.

        Args:
            path: the ``.partial`` file to create.
            bands: the bands packed, in order (stored as ``attrs["bands"]``).
            pad: whether small cutouts are padded (stored as ``attrs["pad"]``).

        Returns:
            The locked store, with no stamp shape yet.

        Raises:
            GalmocoError: when ``path`` exists (:func:`existing_partial_error`).
        """
        attrs = {"bands": "".join(bands), "galmoco_version": __version__, "pad": pad, "complete": False,
                 "n_written": 0}
        try:
            return cls._create_linked(path, attrs)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
        return cls._create_in_place(path, attrs)

    @classmethod
    def _create_linked(cls, path: Path, attrs: dict) -> PartialStore:
        """Write and lock the new file under a temporary name, then link it to ``path``."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            store = cls(path, fd, _new_partial(fd, tmp, attrs))
            try:
                os.chmod(tmp, default_file_mode())
                os.link(tmp, path)
            except BaseException as exc:
                store.close()
                if isinstance(exc, FileExistsError):
                    raise existing_partial_error(path, resume=False) from None
                raise
        finally:
            os.unlink(tmp)
        return store

    @classmethod
    def _create_in_place(cls, path: Path, attrs: dict) -> PartialStore:
        """Create ``path`` exclusively, lock it, then write the new file into it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise existing_partial_error(path, resume=False) from None
        try:
            return cls(path, fd, _new_partial(fd, path, attrs))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @classmethod
    def resume(cls, path: Path) -> PartialStore:
        """Open and lock the partial file an interrupted pack left.

        Args:
            path: the ``.partial`` file.

        Returns:
            The locked store, holding the ``n_written`` objects flushed before the interruption.

        Raises:
            GalmocoError: when there is no such file, another pack holds it, or it is damaged.
        """
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise GalmocoError(f"{path}: nothing to resume (no partial pack at this path)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise existing_partial_error(path, resume=True) from None
        try:
            h5 = h5py.File(path, "r+", locking=False)
        except OSError as exc:
            os.close(fd)
            raise GalmocoError(f"{path}: cannot resume, the file is damaged ({exc}); delete it") from None
        try:
            return cls(path, fd, h5)
        except (KeyError, ValueError) as exc:
            h5.close()
            os.close(fd)
            raise GalmocoError(f"{path}: cannot resume, the file is damaged ({exc}); delete it") from None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """``(B, H, W)`` of the stamps, or None before :meth:`set_shape`."""
        return self.h5["images"].shape[1:] if "images" in self.h5 else None

    def set_shape(self, cuts: list[Cutout]) -> None:
        """Create the datasets for the most common stamp shape among ``cuts`` (ties: the larger stamp,
        since a cutout trimmed at a tile edge is smaller), with that shape's first cutout's units."""
        counts = Counter(c.image.shape for c in cuts)
        shape = max(counts, key=lambda s: (counts[s], s[1] * s[2]))
        first = next(c for c in cuts if c.image.shape == shape)
        for name in ("images", "weights"):
            self.h5.create_dataset(name, (0, *shape), np.float32, maxshape=(None, *shape), chunks=(1, *shape))
        self.h5.create_dataset("catalog", (0,), BASE_DTYPE, maxshape=(None,), chunks=(1024,))
        self.h5.attrs.update({"units": first.units, "pixel_scale": first.pixel_scale,
                              "zeropoint": first.zeropoint})
        self.h5.flush()

    def ids(self) -> list[str]:
        """Ids of the objects written (``n_written`` of them), as str."""
        if self.shape is None:
            return []
        return [i.decode() if isinstance(i, bytes) else i for i in self.h5["catalog"]["id"][: self.n]]

    def check(self, cut: Cutout) -> str | None:
        """Why a cutout does not fit this store, or None."""
        attrs, shape = self.h5.attrs, self.shape
        if cut.image.shape != shape:
            return f"shape {cut.image.shape} differs from the store's {shape} (give --size, --pad)"
        if cut.units != attrs["units"] or cut.zeropoint != attrs["zeropoint"]:
            return (f"units {cut.units} ZP {cut.zeropoint} differ from the store's {attrs['units']} "
                    f"ZP {attrs['zeropoint']}")
        if abs(cut.pixel_scale / attrs["pixel_scale"] - 1) > 0.01:
            return f"pixel scale {cut.pixel_scale:.4f} differs from the store's {attrs['pixel_scale']:.4f}"
        return None

    def append(self, cuts: list[Cutout]) -> None:
        """Write a batch, flush, and only then advance ``n_written``."""
        start, stop = self.n, self.n + len(cuts)
        for name in ("images", "weights", "catalog"):
            self.h5[name].resize(stop, axis=0)
        self.h5["images"][start:stop] = np.stack([c.image for c in cuts])
        self.h5["weights"][start:stop] = np.stack([c.weight for c in cuts])
        self.h5["catalog"][start:stop] = np.array(
            [(c.id, c.ra, c.dec, c.source, c.n_bad_pixels, c.padded) for c in cuts], BASE_DTYPE)
        self.h5.flush()
        self.n = stop
        self.h5.attrs["n_written"] = stop
        self.h5.flush()

    def close(self) -> None:
        """Close the file, then release the lock."""
        self.h5.close()
        os.close(self.fd)
