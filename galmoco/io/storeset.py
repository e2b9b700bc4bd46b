"""Several packed stores read as one dataset: a survey packed tile by tile, or packs made in parallel.

Rows are numbered through the files in the order given; every file must have the same data contract
(bands, stamp size, units, zero point, pixel scale), or the error names the first file that differs.
Reads are contiguous slices of one file at a time, so memory is bounded by the slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from galmoco.contract import DataContract
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore

__all__ = ["StoreSet"]


class StoreSet:
    """One or more packed stores opened as one dataset; also a context manager.

    Args:
        paths: store files (one path or several), read in this order.

    Attributes:
        paths: the files; offsets: first global row of each file (plus the total at the end);
        bands, shape (``(B, H, W)``), contract (:class:`~galmoco.contract.DataContract`).

    Example:
        >>> with StoreSet([first_h5, second_h5]) as stores:  # doctest: +SKIP
        ...     batch = stores.read_rows(0, 256)  # (256, B, H, W) float32, across the file boundary
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        self.paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
        if not self.paths:
            raise GalmocoError("no store files given")
        self.stores: list[CutoutStore] = []
        try:
            for path in self.paths:
                self.stores.append(CutoutStore(path))
            first = self.stores[0]
            self.contract = DataContract.from_attrs(first.attrs, first.shape)
            for store in self.stores[1:]:
                other = DataContract.from_attrs(store.attrs, store.shape)
                problem = self.contract.mismatch(other)
                if problem:
                    raise GalmocoError(f"{store.path}: {problem.format(model=str(first.path))} "
                                       "(stores read together must hold the same data)")
        except BaseException:
            self.close()
            raise
        self.bands, self.shape = first.bands, first.shape
        self.offsets = np.cumsum([0] + [len(s) for s in self.stores])

    @property
    def path(self) -> Path:
        """The first file (names the set in messages)."""
        return self.paths[0]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read_rows(self, start: int, stop: int, field: str = "images") -> np.ndarray:
        """Global rows ``start:stop`` of ``images`` or ``weights`` as float32 ``(stop - start, B, H, W)``."""
        if not 0 <= start <= stop <= len(self):
            raise GalmocoError(f"{self.path}: rows {start}:{stop} out of range 0..{len(self)}")
        parts = []
        for store, lo, hi in zip(self.stores, self.offsets[:-1], self.offsets[1:], strict=True):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                parts.append(store.h5[field][a - lo: b - lo])
        if not parts:
            return np.empty((0, *self.shape), np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def catalog(self, start: int = 0, stop: int | None = None) -> Table:
        """Catalogue rows ``start:stop`` of all files (the columns all files have; a ``store`` column
        names each row's file when there are several)."""
        stop = len(self) if stop is None else stop
        parts = []
        for path, store, lo, hi in zip(self.paths, self.stores, self.offsets[:-1], self.offsets[1:],
                                       strict=True):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                part = store.catalog[a - lo: b - lo]
                if len(self.paths) > 1:
                    part["store"] = str(path)
                parts.append(part)
        if not parts:
            return self.stores[0].catalog[:0]
        return vstack(parts, join_type="inner", metadata_conflicts="silent") if len(parts) > 1 else parts[0]

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __enter__(self) -> StoreSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
