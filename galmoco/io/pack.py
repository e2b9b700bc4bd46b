"""Pack many FITS cutouts into one HDF5 store (layout: ``docs/architecture.md``), streaming and resumable.

Sources are read in a process pool, a bounded window ahead of the writer (:mod:`galmoco.io.pack_read`),
which appends in source order, so memory stays flat in N. The file is written as
``<out>.partial``; ``attrs["n_written"]`` (objects whose images, weights and catalogue rows are on
disk) is advanced and flushed after every batch; ``complete=True`` is set and the file renamed to
``<out>`` only at the end, so a killed pack never leaves a file that looks complete, and
``resume=True`` continues it. The partial is valid from its creation and locked by its writer
(see :class:`~galmoco.io.pack_store.PartialStore`).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from astropy.table import Table
from tqdm import tqdm

from galmoco.errors import GalmocoError
from galmoco.files import atomic_output
from galmoco.io.catalog_join import check_catalog_matches, join_catalog, load_catalog
from galmoco.io.fits import Cutout, cutout_id, parse_bands, parse_size
from galmoco.io.pack_read import Skipped, default_workers, expand_sources, ordered_reads, read_chunk
from galmoco.io.pack_store import PartialStore, existing_partial_error

__all__ = ["PackResult", "Skipped", "default_workers", "expand_sources", "pack_cutouts"]

_BATCH = 64  # objects per HDF5 append + flush: bounds what a kill can lose


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


def _shaped(results: Iterable[Cutout | Skipped], store: PartialStore) -> Iterator[Cutout | Skipped]:
    """``results`` in order; while the store has no stamp shape, the first ``_BATCH`` cutouts are held
    and decide it (:meth:`~galmoco.io.pack_store.PartialStore.set_shape`), so a trimmed edge cutout read
    first does not."""
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


def _check_resumable(store: PartialStore, bands: tuple[str, ...], size, pad: bool) -> None:
    """Refuse to resume a partial pack started with other options.

    Args:
        store: the resumed partial store.
        bands: this run's bands.
        size: this run's ``(H, W)``, or None (any).
        pad: this run's padding.

    Raises:
        GalmocoError: naming the options the partial was started with.
    """
    attrs = store.h5.attrs
    shape = None if store.shape is None else store.shape[1:]
    if (attrs["bands"] != "".join(bands) or bool(attrs["pad"]) != pad
            or (size is not None and shape is not None and shape != size)):
        raise GalmocoError(f"{store.path}: was started with bands={attrs['bands']} size={shape} pad="
                           f"{bool(attrs['pad'])}; resume with the same options or delete it")


def _write_skipped(path: Path, skipped: list[Skipped]) -> Path | None:
    """Write the skipped sources as a CSV (``id, source, reason``), or delete a stale one when none.

    Args:
        path: the CSV (``<out>.skipped.csv``).
        skipped: the sources not packed.

    Returns:
        ``path``, or None when nothing was skipped.
    """
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "source", "reason"])
        writer.writerows((s.id, s.source, s.reason) for s in skipped)
    return path


def _checked_workers(workers: int | None, pad: bool, size: int | Sequence[int] | None) -> int:
    """Validate the worker count and the padding option.

    Args:
        workers: reader processes, or None for :func:`default_workers`.
        pad: whether small cutouts are to be padded.
        size: the requested stamp size, or None.

    Returns:
        The number of reader processes (at least 1).

    Raises:
        GalmocoError: for fewer than one worker, or ``pad`` without ``size``.
    """
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise GalmocoError(f"workers={workers}: must be at least 1")
    if pad and size is None:  # the first object read could itself be trimmed: padding needs the real side
        raise GalmocoError("pad needs size: give the side the cutouts were requested with (--size N)")
    return workers


def _check_partial(partial_path: Path, resume: bool) -> None:
    """Refuse an existing partial pack without ``resume``, and ``resume`` without one.

    Args:
        partial_path: ``<out>.partial``.
        resume: whether this run continues an interrupted pack.

    Raises:
        GalmocoError: from :func:`~galmoco.io.pack_store.existing_partial_error`, or nothing to resume.
    """
    if partial_path.exists() and not resume:
        raise existing_partial_error(partial_path, resume=False)
    if resume and not partial_path.exists():
        raise GalmocoError(f"{partial_path}: nothing to resume (no partial pack at this path)")


def _open_partial(partial_path: Path, resume: bool, bands: tuple[str, ...], size: tuple[int, int] | None,
                  pad: bool) -> PartialStore:
    """The locked partial store: the interrupted one (checked against this run's options), or a new one.

    Args:
        partial_path: ``<out>.partial``.
        resume: continue the partial an interrupted pack left.
        bands: this run's bands.
        size: this run's ``(H, W)``, or None.
        pad: this run's padding.

    Returns:
        The open, locked :class:`~galmoco.io.pack_store.PartialStore` (the caller closes it).
    """
    if not resume:
        return PartialStore.create(partial_path, bands, pad)
    store = PartialStore.resume(partial_path)
    try:
        _check_resumable(store, bands, size, pad)
    except GalmocoError:
        store.close()
        raise
    return store


def _plan(ids: list[str], paths: list[Path], done: set[str]) -> tuple[list[Path], list[Skipped]]:
    """Which sources to read: not yet in the store, first of each id.

    Args:
        ids: object ids, one per source (:func:`~galmoco.io.fits.cutout_id`).
        paths: the sources, in order.
        done: ids already in the store (resume).

    Returns:
        The sources to read, in order, and the duplicates skipped (naming the source they repeat).
    """
    skipped: list[Skipped] = []
    todo: list[Path] = []
    seen: dict[str, Path] = {}
    for oid, path in zip(ids, paths, strict=True):
        if oid in seen:
            skipped.append(Skipped(oid, str(path), f"duplicate id (also {seen[oid]})"))
        elif oid not in done:
            todo.append(path)
        seen.setdefault(oid, path)
    return todo, skipped


def _screened(res: Cutout | Skipped, store: PartialStore) -> Cutout | Skipped:
    """A read cutout that fits the store, or the reason it is skipped.

    Args:
        res: one read result.
        store: the store with its stamp shape decided.

    Returns:
        ``res`` itself, or a :class:`Skipped` with :meth:`~galmoco.io.pack_store.PartialStore.check`'s
        reason.
    """
    if isinstance(res, Skipped):
        return res
    reason = store.check(res)
    return res if reason is None else Skipped(res.id, res.source, reason)


def _append_all(store: PartialStore, results: Iterable[Cutout | Skipped], strict: bool,
                bar: tqdm) -> list[Skipped]:
    """Append the cutouts that fit, ``_BATCH`` at a time, in order.

    Args:
        store: the partial store (its shape is decided by the first cutouts, :func:`_shaped`).
        results: read results, in source order.
        strict: fail on the first source that cannot be packed.
        bar: the progress bar, advanced once per result.

    Returns:
        The sources skipped, in order.

    Raises:
        GalmocoError: with ``strict``, for the first skipped source (the partial is kept for ``resume``).
    """
    skipped: list[Skipped] = []
    batch: list[Cutout] = []
    for res in _shaped(results, store):
        bar.update(1)
        res = _screened(res, store)
        if isinstance(res, Cutout):
            batch.append(res)
        elif strict:
            raise GalmocoError(f"{res.source}: {res.reason} (strict; the partial pack is kept"
                               f" at {store.path}: fix the file and rerun with --resume)")
        else:
            skipped.append(res)
        if len(batch) >= _BATCH:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)
    return skipped


def _join_catalog(store: PartialStore, table: Table, catalog: str | Path, id_column: str) -> int:
    """Replace the store's ``/catalog`` with its join to the user's catalogue.

    Args:
        store: the partial store holding every packed object.
        table: the loaded catalogue (:func:`~galmoco.io.catalog_join.load_catalog`).
        catalog: its path, for messages.
        id_column: its id column.

    Returns:
        The number of packed objects that found their row.

    Raises:
        GalmocoError: when none did (possible when every matching object was skipped).
    """
    rows = join_catalog(store.h5["catalog"][:], table, id_column)
    n_matched = int(rows["in_catalog"].sum())
    if n_matched == 0:
        raise GalmocoError(f"{catalog}: none of the {store.n} packed objects has a row (column "
                           f"{id_column!r}); the pack is kept at {store.path}: rerun "
                           "with --resume and the right --catalog")
    del store.h5["catalog"]
    store.h5.create_dataset("catalog", data=rows, chunks=True)
    return n_matched


def _check_packed(store: PartialStore, skipped: list[Skipped], skipped_csv: Path | None) -> None:
    """Fail, deleting the partial, when no object was packed.

    Args:
        store: the partial store.
        skipped: the sources skipped (the first is named in the message).
        skipped_csv: where they are listed.

    Raises:
        GalmocoError: when the store holds no object.
    """
    if store.n == 0:
        store.path.unlink()
        first = f": {skipped[0].source}: {skipped[0].reason}" if skipped else ""
        raise GalmocoError(f"no object could be packed ({len(skipped)} skipped, listed in "
                           f"{skipped_csv}){first}")


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
    workers = _checked_workers(workers, pad, size)
    partial_path = out.with_name(out.name + ".partial")
    _check_partial(partial_path, resume)
    table = load_catalog(catalog, catalog_id_column) if catalog is not None else None
    paths = expand_sources(sources)
    if not paths:
        raise GalmocoError("no cutout sources given")
    ids = [cutout_id(path) for path in paths]  # from paths alone: duplicates and done objects cost no read
    if table is not None:
        check_catalog_matches(ids, table, catalog, catalog_id_column)

    store = _open_partial(partial_path, resume, band_tuple, hw, pad)
    try:
        done = set(store.ids())
        todo, skipped = _plan(ids, paths, done)
        read = partial(read_chunk, bands=band_tuple, size=hw, pad=pad)
        with tqdm(total=len(todo) + len(done), initial=len(done), unit="obj", desc="pack",
                  disable=None) as bar:
            skipped += _append_all(store, ordered_reads(todo, read, workers), strict, bar)
        skipped_csv = _write_skipped(out.with_name(out.name + ".skipped.csv"), skipped)
        _check_packed(store, skipped, skipped_csv)
        n_matched = None if table is None else _join_catalog(store, table, catalog, catalog_id_column)
        store.h5.attrs["complete"] = True
        store.h5.flush()
        os.replace(partial_path, out)
    finally:
        store.close()
    return PackResult(out, store.n, len(done), skipped, skipped_csv, time.perf_counter() - t0, n_matched)
