"""Pack many FITS cutouts into one HDF5 store (layout: ``docs/architecture.md``), streaming and resumable.

Reading runs in a process pool (threads were no faster than one reader in ``benchmarks/bench_io.py``:
a small-file read is mostly GIL-holding Python and fitsio work), a bounded window of chunks ahead of
the writer, which appends in source order, so memory stays flat in N. The file is written as
``<out>.partial``; ``attrs["n_written"]`` (objects whose images, weights and catalogue rows are on
disk) is advanced and flushed after every batch; ``complete=True`` is set and the file renamed to
``<out>`` only at the end, so a killed pack never leaves a file that looks complete, and
``resume=True`` continues it.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table
from tqdm import tqdm

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.io.fits import (
    Cutout,
    cutout_id,
    find_cutouts,
    is_fits_path,
    parse_bands,
    parse_size,
    read_cutout,
)
from galmoco.io.store import BASE_DTYPE, STRING

__all__ = ["PackResult", "Skipped", "default_workers", "expand_sources", "join_catalog", "load_catalog",
           "pack_cutouts"]

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
    """

    path: Path
    n_packed: int
    n_resumed: int
    skipped: list[Skipped] = field(default_factory=list)
    skipped_csv: Path | None = None
    seconds: float = 0.0


def default_workers() -> int:
    """Reader processes by default: one core is left to the writer, at most 8 (disk-bound beyond)."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _read_list(path: Path) -> list[Path]:
    """Paths from a text list (one per line, ``#`` comments) or a CSV with a ``path`` column."""
    try:
        lines = path.read_text().splitlines()
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


def load_catalog(path: str | Path, id_column: str = "id") -> Table:
    """Read a catalogue (FITS, ECSV or CSV) to join at pack time; check its id column.

    Raises:
        GalmocoError: naming the file, when it cannot be read, lacks ``id_column`` or repeats an id.
    """
    path = Path(path)
    if not path.is_file():
        raise GalmocoError(f"{path}: no such catalogue file")
    suffix = path.suffix.lower()
    fmt = "fits" if is_fits_path(path) else {".ecsv": "ascii.ecsv", ".csv": "ascii.csv"}.get(suffix)
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for unreadable tables
        raise GalmocoError(f"{path}: cannot read as a table ({type(exc).__name__}: {exc})") from None
    if id_column not in table.colnames:
        raise GalmocoError(f"{path}: no id column {id_column!r} (columns: {', '.join(table.colnames)})")
    ids = [str(v).strip() for v in table[id_column]]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        row = next(i for i, v in enumerate(ids) if v in seen or seen.add(v))
        raise GalmocoError(f"{path}: row {row + 1} repeats id {ids[row]!r} in column {id_column!r}")
    return table


def _fill(dtype: np.dtype):
    """The value for packed objects the catalogue lacks: NaN, -1, False or an empty string."""
    return {"f": np.nan, "c": np.nan, "i": -1, "u": 0, "b": False}.get(dtype.kind, "")


def join_catalog(rows: np.ndarray, table: Table, id_column: str = "id") -> np.ndarray:
    """The store's catalogue rows with the table's columns joined by id (left join, store order kept).

    Columns named like the store's own get the suffix ``_catalog``; ``in_catalog`` is True where the id
    was found; elsewhere the joined columns hold NaN (float), -1 (int), False or "".
    """
    index = {str(v).strip(): i for i, v in enumerate(table[id_column])}
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in rows["id"]]
    match = np.array([index.get(i, -1) for i in ids], dtype=np.int64)
    found = match >= 0
    columns: dict[str, np.ndarray] = {}
    dtypes = list(BASE_DTYPE.descr)
    for name in table.colnames:
        if name == id_column:
            continue
        col = table[name]
        data = np.asarray(col.filled(_fill(col.dtype)) if getattr(col, "mask", None) is not None else col)
        kind_str = data.dtype.kind in "USO"
        dtype = STRING if kind_str else data.dtype.newbyteorder("=")  # FITS tables are big-endian
        out = np.full((len(rows), *data.shape[1:]), _fill(data.dtype), dtype=object if kind_str else dtype)
        out[found] = data[match[found]].astype(str) if kind_str else data[match[found]]
        key = f"{name}_catalog" if name in BASE_DTYPE.names or name == "in_catalog" else name
        columns[key] = out
        dtypes.append((key, dtype, data.shape[1:]))
    joined = np.empty(len(rows), dtype=np.dtype([*[(n, BASE_DTYPE[n]) for n in BASE_DTYPE.names],
                                                 *dtypes[len(BASE_DTYPE):], ("in_catalog", "?")]))
    for name in BASE_DTYPE.names:
        joined[name] = rows[name]
    for key, values in columns.items():
        joined[key] = values
    joined["in_catalog"] = found
    return joined


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


class _Store:
    """The partial HDF5 file being appended to."""

    def __init__(self, path: Path, first: Cutout | None, bands: tuple[str, ...], pad: bool):
        self.path = path
        if first is None:  # resume
            self.h5 = h5py.File(path, "r+")
            self.n = int(self.h5.attrs["n_written"])
            for name in ("images", "weights", "catalog"):  # drop rows written after the last flush
                self.h5[name].resize(self.n, axis=0)
            return
        self.h5 = h5py.File(path, "w")
        shape = (len(bands), *first.image.shape[1:])
        for name in ("images", "weights"):
            self.h5.create_dataset(name, (0, *shape), np.float32, maxshape=(None, *shape), chunks=(1, *shape))
        self.h5.create_dataset("catalog", (0,), BASE_DTYPE, maxshape=(None,), chunks=(1024,))
        self.h5.attrs.update({"bands": "".join(bands), "units": first.units, "pixel_scale": first.pixel_scale,
                              "zeropoint": first.zeropoint, "galmoco_version": __version__,
                              "pad": pad, "complete": False, "n_written": 0})
        self.n = 0

    def ids(self) -> list[str]:
        return [i.decode() if isinstance(i, bytes) else i for i in self.h5["catalog"]["id"][: self.n]]

    def check(self, cut: Cutout) -> str | None:
        """Why a cutout does not fit this store, or None."""
        attrs, shape = self.h5.attrs, self.h5["images"].shape[1:]
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


def _check_resumable(store: _Store, bands: tuple[str, ...], size, pad: bool) -> None:
    attrs, shape = store.h5.attrs, store.h5["images"].shape[2:]
    if attrs["bands"] != "".join(bands) or bool(attrs["pad"]) != pad or (size is not None and shape != size):
        raise GalmocoError(f"{store.path}: was started with bands={attrs['bands']} size={shape} pad="
                           f"{bool(attrs['pad'])}; resume with the same options or delete it")


def _write_skipped(path: Path, skipped: list[Skipped]) -> Path | None:
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "source", "reason"])
        writer.writerows((s.id, s.source, s.reason) for s in skipped)
    os.replace(tmp, path)
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
        size: cutout size in pixels (int or (H, W)); None: the first object's size.
        pad: pad cutouts smaller than ``size`` (weight 0 in the pad) instead of skipping them.
        workers: reader processes; None: :func:`default_workers`. 1 reads in this process.
        resume: continue ``<out>.partial`` left by an interrupted pack, skipping the objects in it.
        strict: fail on the first bad source instead of skipping it.
        catalog: a table (FITS, ECSV or CSV) whose columns are joined into ``/catalog`` by object id;
            columns that clash with the store's are suffixed ``_catalog``; ``in_catalog`` flags matches.
        catalog_id_column: the catalogue's id column.

    Returns:
        A :class:`PackResult`; skipped sources are also written to ``<out>.skipped.csv``.

    Raises:
        GalmocoError: for bad options or sources, an existing partial without ``resume``, a bad source
            with ``strict``, or when no object could be packed.
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
        raise GalmocoError(f"{partial_path}: an interrupted pack is here; continue it with --resume "
                           "or delete it")
    if resume and not partial_path.exists():
        raise GalmocoError(f"{partial_path}: nothing to resume (no partial pack at this path)")
    table = load_catalog(catalog, catalog_id_column) if catalog is not None else None
    paths = expand_sources(sources)
    if not paths:
        raise GalmocoError("no cutout sources given")

    store = None
    done: set[str] = set()
    if resume:
        try:
            store = _Store(partial_path, None, band_tuple, pad)
        except (OSError, KeyError) as exc:
            raise GalmocoError(f"{partial_path}: cannot resume, the file is damaged ({exc}); "
                               "delete it") from None
        _check_resumable(store, band_tuple, hw, pad)
        done = set(store.ids())
    n_resumed = len(done)
    skipped: list[Skipped] = []
    todo: list[Path] = []
    seen: dict[str, Path] = {}
    for path in paths:  # ids come from paths alone, so duplicates and finished objects cost no read
        oid = cutout_id(path)
        if oid in seen:
            skipped.append(Skipped(oid, str(path), f"duplicate id (also {seen[oid]})"))
        elif oid not in done:
            todo.append(path)
        seen.setdefault(oid, path)
    read = partial(_read_chunk, bands=band_tuple, size=hw, pad=pad)
    batch: list[Cutout] = []
    try:
        with tqdm(total=len(todo) + n_resumed, initial=n_resumed, unit="obj", desc="pack",
                  disable=None) as bar:
            for res in _ordered_reads(todo, read, workers):
                bar.update(1)
                if isinstance(res, Cutout):
                    if store is None:
                        store = _Store(partial_path, res, band_tuple, pad)
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
            if store is not None and batch:
                store.append(batch)
    finally:
        if store is not None:
            store.h5.close()
    skipped_csv = _write_skipped(out.with_name(out.name + ".skipped.csv"), skipped)
    if store is None or store.n == 0:
        partial_path.unlink(missing_ok=True)
        first = f": {skipped[0].source}: {skipped[0].reason}" if skipped else ""
        raise GalmocoError(f"no object could be packed ({len(skipped)} skipped, listed in "
                           f"{skipped_csv}){first}")
    with h5py.File(partial_path, "r+") as h5:
        if table is not None:
            rows = join_catalog(h5["catalog"][:], table, catalog_id_column)
            del h5["catalog"]
            h5.create_dataset("catalog", data=rows, chunks=True)
        h5.attrs["complete"] = True
    os.replace(partial_path, out)
    return PackResult(out, store.n, n_resumed, skipped, skipped_csv, time.perf_counter() - t0)
