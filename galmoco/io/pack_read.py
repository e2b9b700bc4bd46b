"""The sources of a pack: expanding folders and path lists, and reading them in a process pool.

Reading runs in a process pool (threads were no faster than one reader in ``benchmarks/bench_io.py``:
a small-file read is mostly GIL-holding Python and fitsio work), a bounded window of chunks ahead of
the writer (:func:`galmoco.io.pack.pack_cutouts`), so memory stays flat in N.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from galmoco.errors import GalmocoError
from galmoco.io.fits import Cutout, read_cutout
from galmoco.io.sources import cutout_id, find_cutouts, is_fits_path

__all__ = ["Skipped", "default_workers", "expand_sources", "ordered_reads", "read_chunk"]

_CHUNK = 16  # sources per pool task: amortises the inter-process round trip (~0.2 ms) over ~20 ms of reads


@dataclass
class Skipped:
    """A source that was not packed, and why."""

    id: str
    source: str
    reason: str


def default_workers() -> int:
    """Reader processes by default: one core is left to the writer, at most 8 (disk-bound beyond)."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _read_list(path: Path) -> list[Path]:
    """Paths from a text list (one per line, ``#`` comments) or a CSV with a ``path`` column.

    Args:
        path: the list file (UTF-8, a BOM is dropped).

    Returns:
        The listed paths, relative ones taken relative to the list's folder.

    Raises:
        GalmocoError: for an unreadable file, or a CSV row without a path.
    """
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

    Args:
        sources: one or several folders, FITS files or list files (:func:`_read_list`).

    Returns:
        The cutout sources, in the order given (a folder's sorted).

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


def read_chunk(paths: Sequence[Path], bands: tuple[str, ...], size: tuple[int, int] | None,
               pad: bool) -> list[Cutout | Skipped]:
    """Read several sources (in a pool worker); failures become :class:`Skipped`.

    Args:
        paths: the sources (:func:`~galmoco.io.fits.read_cutout`'s ``path``).
        bands: the bands to read, in order.
        size: the stamp ``(H, W)`` in pixels, or None (as found).
        pad: pad cutouts smaller than ``size``.

    Returns:
        One :class:`~galmoco.io.fits.Cutout` or :class:`Skipped` per source, in order.
    """
    results: list[Cutout | Skipped] = []
    for path in paths:
        try:
            results.append(read_cutout(path, bands=bands, size=size, pad=pad))
        except GalmocoError as exc:
            results.append(Skipped(cutout_id(path), str(path), str(exc)))
        except Exception as exc:  # noqa: BLE001 - one odd file must not kill a long pack
            results.append(Skipped(cutout_id(path), str(path), f"{type(exc).__name__}: {exc}"))
    return results


def ordered_reads(paths: list[Path], read: Callable[[list[Path]], list[Cutout | Skipped]],
                  workers: int) -> Iterator[Cutout | Skipped]:
    """Results in source order, at most ``4 * workers`` chunks in flight (memory bounded).

    Args:
        paths: the sources, in order.
        read: reads one chunk of ``_CHUNK`` sources (:func:`read_chunk` with its options bound; picklable).
        workers: reader processes; 1 reads in this process.

    Returns:
        An iterator over the read results, in source order.
    """
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
