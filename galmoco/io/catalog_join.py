"""The catalogue joined into a store at pack time (``galmoco pack --catalog``): read, check, join by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.io.fits import is_fits_path
from galmoco.io.store import BASE_DTYPE, STRING

__all__ = ["check_catalog_matches", "join_catalog", "load_catalog"]


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


def check_catalog_matches(ids: list[str], table: Table, catalog: str | Path, id_column: str) -> None:
    """Fail before any work when no source's id is in the catalogue (a wrong id column or file)."""
    known = {str(v).strip() for v in table[id_column]}
    if not known.intersection(ids):
        raise GalmocoError(f"{catalog}: none of the {len(set(ids))} object ids matches column {id_column!r} "
                           f"(objects look like {ids[0]!r}, the catalogue like {str(table[id_column][0])!r})")


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
