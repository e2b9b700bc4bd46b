"""Pack many FITS cutouts into one HDF5 store (layout: ``docs/architecture.md``), streaming and resumable.

Reading runs in a process pool (threads were no faster than one reader in ``benchmarks/bench_io.py``:
a small-file read is mostly GIL-holding Python and fitsio work), a bounded window of chunks ahead of
the writer, which appends in source order, so memory stays flat in N. The file is written as
``<out>.partial``; ``attrs["n_written"]`` (objects whose images, weights and catalogue rows are on
disk) is advanced and flushed after every batch; ``complete=True`` is set and the file renamed to
``<out>`` only at the end, so a killed pack never leaves a file that looks complete, and
``resume=True`` continues it. The partial is valid from its creation and locked by its writer
(see :class:`_Store`).
"""

from __future__ import annotations

import csv
import fcntl
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.files import atomic_output, default_file_mode
from galmoco.io.catalog_join import check_catalog_matches, join_catalog, load_catalog
from galmoco.io.fits import (
    Cutout,
    cutout_id,
    find_cutouts,
    is_fits_path,
    parse_bands,
    parse_size,
    read_cutout,
)
from galmoco.io.store import BASE_DTYPE

__all__ = ["PackResult", "Skipped", "default_workers", "expand_sources", "pack_cutouts"]

_CHUNK = 16  # sources per pool task: amortises the inter-process round trip (~0.2 ms) over ~20 ms of reads
_BATCH = 64  # objects per HDF5 append + flush: bounds what a kill can lose


@dataclass
class Skipped:
    """A source that was not packed, and why."""

    id: str
    source: str
    reason: str


@dataclass
class PackResult:
    """What :func:`pack_cutouts` did.

    Attributes:
        path: the finished store.
        n_packed: objects in the store (including those written before a resume).
        n_resumed: objects that were already in the partial file when resuming.
        skipped: sources not packed, with reasons.
        skipped_csv: the CSV listing them (``<out>.skipped.csv``), or None when none were skipped.
        seconds: wall time of this call.
        n_catalog_matched: packed objects that found their row in ``catalog`` (None without one); the
            other ``n_packed - n_catalog_matched`` have ``in_catalog`` False.
    """

    path: Path
    n_packed: int
    n_resumed: int
    skipped: list[Skipped] = field(default_factory=list)
    skipped_csv: Path | None = None
    seconds: float = 0.0
    n_catalog_matched: int | None = None


def default_workers() -> int:
    """Reader processes by default: one core is left to the writer, at most 8 (disk-bound beyond)."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _read_list(path: Path) -> list[Path]:
    """Paths from a text list (one per line, ``#`` comments) or a CSV with a ``path`` column."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: drops a BOM (Windows editors)
    except (OSError, UnicodeDecodeError) as exc:
        raise GalmocoError(f"{path}: not a FITS file, folder or readable list of paths ({exc})") from None
    lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    header = [c.strip().lower() for c in next(csv.reader(lines[:1]), [])]
    if "path" in header:
        col = header.index("path")
        rows = list(csv.reader(lines[1:]))
        bad = [i + 2 for i, r in enumerate(rows) if len(r) <= col or not r[col].strip()]
        if bad:
            raise GalmocoError(f"{path}: row {bad[0]} has no value in the 'path' column")
        names = [r[col].strip() for r in rows]
    else:
        names = [ln.strip() for ln in lines]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, names)]


def expand_sources(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """Cutout sources from folders (searched with :func:`find_cutouts`), FITS files and list files.

    Raises:
        GalmocoError: for a path that does not exist, or a folder with no cutouts.
    """
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = find_cutouts(item)
            if not found:
                raise GalmocoError(f"{item}: no FITS cutouts under this folder")
            out.extend(found)
        elif not item.exists():
            raise GalmocoError(f"{item}: no such file or folder")
        elif is_fits_path(item):
            out.append(item)
        else:  # listed paths are not checked here: a missing one is skipped with its reason
            out.extend(_read_list(item))
    return out


def _read_chunk(paths: Sequence[Path], bands: tuple[str, ...], size, pad: bool) -> list[Cutout | Skipped]:
    """Read several sources (in a pool worker); failures become :class:`Skipped`."""
    results: list[Cutout | Skipped] = []
    for path in paths:
        try:
            results.append(read_cutout(path, bands=bands, size=size, pad=pad))
        except GalmocoError as exc:
            results.append(Skipped(cutout_id(path), str(path), str(exc)))
        except Exception as exc:  # noqa: BLE001 - one odd file must not kill a long pack
            results.append(Skipped(cutout_id(path), str(path), f"{type(exc).__name__}: {exc}"))
    return results


def _ordered_reads(paths: list[Path], read, workers: int) -> Iterator[Cutout | Skipped]:
    """Results in source order, at most ``4 * workers`` chunks in flight (memory bounded)."""
    chunks = (paths[i: i + _CHUNK] for i in range(0, len(paths), _CHUNK))
    if workers == 1:
        for chunk in chunks:
            yield from read(chunk)
        return
    with ProcessPoolExecutor(workers) as pool:
        window = deque(pool.submit(read, c) for c in islice(chunks, 4 * workers))
        while window:
            done = window.popleft().result()
            window.extend(pool.submit(read, c) for c in islice(chunks, 1))
            yield from done


def _busy_or_interrupted(path: Path, resume: bool) -> GalmocoError:
    """The error for an existing partial pack: another run is writing it (its lock is held), or it was
    left by an interrupted run (no lock), which ``--resume`` continues."""
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


class _Store:
    """The partial HDF5 file being appended to, locked (``flock``) by this process from its creation to
    its rename, so a second pack on the same output is refused instead of truncating it.

    A new partial is written and flushed under a temporary name, locked, then linked to its final name
    (``os.link`` fails when that exists: exclusive creation), so the ``.partial`` is a valid, resumable
    file from the moment it appears. Its image datasets are created when the stamp shape is decided
    (:meth:`set_shape`); a partial without them resumes from zero objects.
    HDF5's own file locking is off for it (the ``flock`` is the lock, and HDF5's would conflict with it).
    """

    def __init__(self, path: Path, fd: int, h5: h5py.File):
        self.path, self.fd, self.h5 = path, fd, h5
        self.n = int(h5.attrs["n_written"])
        if self.shape is not None:
            for name in ("images", "weights", "catalog"):  # drop rows written after the last flush
                self.h5[name].resize(self.n, axis=0)

    @classmethod
    def create(cls, path: Path, bands: tuple[str, ...], pad: bool) -> _Store:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        h5 = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            h5 = h5py.File(tmp, "w", locking=False)
            h5.attrs.update({"bands": "".join(bands), "galmoco_version": __version__, "pad": pad,
                             "complete": False, "n_written": 0})
            h5.flush()
            os.chmod(tmp, default_file_mode())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _busy_or_interrupted(path, resume=False) from None
        except BaseException:
            if h5 is not None:
                h5.close()
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        return cls(path, fd, h5)

    @classmethod
    def resume(cls, path: Path) -> _Store:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise GalmocoError(f"{path}: nothing to resume (no partial pack at this path)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy_or_interrupted(path, resume=True) from None
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


def _shaped(results: Iterable[Cutout | Skipped], store: _Store) -> Iterator[Cutout | Skipped]:
    """``results`` in order; while the store has no stamp shape, the first ``_BATCH`` cutouts are held
    and decide it (:meth:`_Store.set_shape`), so a trimmed edge cutout read first does not."""
    held: list[Cutout | Skipped] = []
    n_held = 0
    for res in results:
        if store.shape is not None:
            yield res
            continue
        held.append(res)
        n_held += isinstance(res, Cutout)
        if n_held >= _BATCH:
            store.set_shape([c for c in held if isinstance(c, Cutout)])
            yield from held
            held = []
    if n_held and store.shape is None:
        store.set_shape([c for c in held if isinstance(c, Cutout)])
    yield from held


def _check_resumable(store: _Store, bands: tuple[str, ...], size, pad: bool) -> None:
    attrs = store.h5.attrs
    shape = None if store.shape is None else store.shape[1:]
    if (attrs["bands"] != "".join(bands) or bool(attrs["pad"]) != pad
            or (size is not None and shape is not None and shape != size)):
        raise GalmocoError(f"{store.path}: was started with bands={attrs['bands']} size={shape} pad="
                           f"{bool(attrs['pad'])}; resume with the same options or delete it")


def _write_skipped(path: Path, skipped: list[Skipped]) -> Path | None:
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "source", "reason"])
        writer.writerows((s.id, s.source, s.reason) for s in skipped)
    return path


def pack_cutouts(sources: str | Path | Iterable[str | Path], out: str | Path,
                 bands: str | Sequence[str] = "griz", size: int | Sequence[int] | None = None,
                 pad: bool = False, workers: int | None = None,
                 resume: bool = False, strict: bool = False, catalog: str | Path | None = None,
                 catalog_id_column: str = "id") -> PackResult:
    """Pack cutouts into one HDF5 store.

    Args:
        sources: folders (searched with :func:`~galmoco.io.fits.find_cutouts`), cutout paths, or text
            files listing paths (one per line, or a CSV with a ``path`` column; relative to the list).
        out: the store to write (``.h5``); an existing file is replaced when the pack completes.
        bands: bands to pack, in this order.
        size: cutout size in pixels (int or (H, W)); None: the most common size among the first 64
            objects read (ties: the larger), others are skipped.
        pad: pad cutouts smaller than ``size`` (weight 0 in the pad) instead of skipping them.
        workers: reader processes; None: :func:`default_workers`. 1 reads in this process.
        resume: continue ``<out>.partial`` left by an interrupted pack, skipping the objects in it.
        strict: fail on the first bad source instead of skipping it.
        catalog: a table (FITS, ECSV or CSV) whose columns are joined into ``/catalog`` by object id;
            columns that clash with the store's are suffixed ``_catalog``; ``in_catalog`` flags matches.
        catalog_id_column: the catalogue's id column.

    A second pack on the same ``out`` while one runs is refused (the ``.partial`` is locked by its
    writer); the ``.partial`` is a valid file from its creation, so ``resume`` works after any kill.

    Returns:
        A :class:`PackResult`; skipped sources are also written to ``<out>.skipped.csv``.

    Raises:
        GalmocoError: for bad options or sources, an existing partial without ``resume``, another pack
            writing ``out``, a bad source with ``strict``, a catalogue matching no object, or when no
            object could be packed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    band_tuple, hw = parse_bands(bands), parse_size(size)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise GalmocoError(f"workers={workers}: must be at least 1")
    if pad and size is None:  # the first object read could itself be trimmed: padding needs the real side
        raise GalmocoError("pad needs size: give the side the cutouts were requested with (--size N)")
    partial_path = out.with_name(out.name + ".partial")
    if partial_path.exists() and not resume:
        raise _busy_or_interrupted(partial_path, resume=False)
    if resume and not partial_path.exists():
        raise GalmocoError(f"{partial_path}: nothing to resume (no partial pack at this path)")
    table = load_catalog(catalog, catalog_id_column) if catalog is not None else None
    paths = expand_sources(sources)
    if not paths:
        raise GalmocoError("no cutout sources given")
    ids = [cutout_id(path) for path in paths]  # from paths alone: duplicates and done objects cost no read
    if table is not None:
        check_catalog_matches(ids, table, catalog, catalog_id_column)

    store = _Store.resume(partial_path) if resume else _Store.create(partial_path, band_tuple, pad)
    try:
        if resume:
            _check_resumable(store, band_tuple, hw, pad)
        done = set(store.ids())
        n_resumed = len(done)
        skipped: list[Skipped] = []
        todo: list[Path] = []
        seen: dict[str, Path] = {}
        for oid, path in zip(ids, paths, strict=True):
            if oid in seen:
                skipped.append(Skipped(oid, str(path), f"duplicate id (also {seen[oid]})"))
            elif oid not in done:
                todo.append(path)
            seen.setdefault(oid, path)
        read = partial(_read_chunk, bands=band_tuple, size=hw, pad=pad)
        batch: list[Cutout] = []
        with tqdm(total=len(todo) + n_resumed, initial=n_resumed, unit="obj", desc="pack",
                  disable=None) as bar:
            for res in _shaped(_ordered_reads(todo, read, workers), store):
                bar.update(1)
                if isinstance(res, Cutout):
                    reason = store.check(res)
                    if reason is None:
                        batch.append(res)
                    else:
                        res = Skipped(res.id, res.source, reason)
                if isinstance(res, Skipped):
                    if strict:
                        raise GalmocoError(f"{res.source}: {res.reason} (strict; the partial pack is kept"
                                           f" at {partial_path}: fix the file and rerun with --resume)")
                    skipped.append(res)
                if len(batch) >= _BATCH:
                    store.append(batch)
                    batch = []
            if batch:
                store.append(batch)
        skipped_csv = _write_skipped(out.with_name(out.name + ".skipped.csv"), skipped)
        if store.n == 0:
            partial_path.unlink()
            first = f": {skipped[0].source}: {skipped[0].reason}" if skipped else ""
            raise GalmocoError(f"no object could be packed ({len(skipped)} skipped, listed in "
                               f"{skipped_csv}){first}")
        n_matched = None
        if table is not None:
            rows = join_catalog(store.h5["catalog"][:], table, catalog_id_column)
            n_matched = int(rows["in_catalog"].sum())
            if n_matched == 0:  # possible when every matching object was skipped
                raise GalmocoError(f"{catalog}: none of the {store.n} packed objects has a row (column "
                                   f"{catalog_id_column!r}); the pack is kept at {partial_path}: rerun "
                                   "with --resume and the right --catalog")
            del store.h5["catalog"]
            store.h5.create_dataset("catalog", data=rows, chunks=True)
        store.h5.attrs["complete"] = True
        store.h5.flush()
        os.replace(partial_path, out)
    finally:
        store.close()
    return PackResult(out, store.n, n_resumed, skipped, skipped_csv, time.perf_counter() - t0, n_matched)
