"""Read and validate the list of objects to fetch (a manifest), before any request is made.

A manifest is a CSV, ECSV or FITS table with columns ``ra, dec[, id]`` (ICRS degrees) or
``COADD_OBJECT_ID`` (DESaccess only). Column names are case-insensitive. Every error names the
1-based data row (the first line after the header is row 1) and what is wrong with it.
"""

from __future__ import annotations

import csv
import difflib
import logging
import math
from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.errors import GalmocoError

__all__ = ["read_manifest", "des_basename", "KNOWN_COLUMNS"]

log = logging.getLogger(__name__)

#: the column names a manifest may use (lowercase); other columns are kept but not used
KNOWN_COLUMNS = ("ra", "dec", "id", "coadd_object_id")


def _sexagesimal(value: float) -> str:
    """``DDMMSS.SSSS`` of ``abs(value)`` as DESaccess writes it (integer truncation, seconds rounded)."""
    whole = int(value)
    minutes = int((value - whole) * 60)
    seconds = round(((value - whole) * 60 - minutes) * 60, 4)
    return f"{whole:02d}{minutes:02d}{seconds:07.4f}"


def des_basename(ra: float, dec: float) -> str:
    """The DESaccess cutout BASENAME of a position, e.g. ``DESJ012621.1512+032909.9960``.

    Follows the DESaccess server's conversion (truncated hours/degrees and minutes, seconds rounded
    to 4 decimals), so it equals the POSDIR folder name the service creates for a coordinate row.

    Args:
        ra: right ascension in degrees.
        dec: declination in degrees.

    Returns:
        ``"DESJ" + HHMMSS.SSSS + (+|-) + DDMMSS.SSSS``.
    """
    sign = "-" if dec < 0 else "+"
    return f"DESJ{_sexagesimal(abs(ra) / 15.0)}{sign}{_sexagesimal(abs(dec))}"


def _read_rows(path: Path) -> tuple[list[str], list[list[object]]]:
    """Column names and raw row values of a CSV (read as text) or an ECSV/FITS table."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: drop a BOM (spreadsheet exports)
            lines = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
        if not lines:
            raise GalmocoError(f"{path}: the manifest is empty (no header, no rows)")
        return [c.strip() for c in lines[0]], [list(r) for r in lines[1:]]
    if path.suffix.lower() in (".ecsv", ".fits", ".fit") or suffix == ".fits.gz":
        try:
            table = Table.read(path)
        except Exception as exc:
            raise GalmocoError(f"{path}: cannot read the manifest table: {exc}") from exc
        names = list(table.colnames)
        return names, [[table[n][i] for n in names] for i in range(len(table))]
    raise GalmocoError(f"{path}: unsupported manifest format {path.suffix!r} (use .csv, .ecsv or .fits)")


def _column_index(path: Path, names: list[str], allow_coadd_ids: bool) -> dict[str, int]:
    """Map the known (lowercase) column names to their positions; explain missing or misspelled ones."""
    lower = [n.lower() for n in names]
    found = {k: lower.index(k) for k in KNOWN_COLUMNS if k in lower}
    coords = "ra" in found and "dec" in found
    if not coords and "coadd_object_id" in found:
        if not allow_coadd_ids:
            raise GalmocoError(
                f"{path}: COADD_OBJECT_ID manifests work with DESaccess only; give ra,dec columns"
            )
        return found
    if coords:
        return found
    missing = [k for k in ("ra", "dec") if k not in found]
    unknown = [n for n in names if n.lower() not in KNOWN_COLUMNS]
    hints = []
    by_lower = {u.lower(): u for u in unknown}
    for name in missing:
        close = difflib.get_close_matches(name, list(by_lower), n=1, cutoff=0.5)
        if close:
            hints.append(f"did you mean {by_lower[close[0]]!r} for {name!r}?")
    alt = " or COADD_OBJECT_ID" if allow_coadd_ids else ""
    raise GalmocoError(
        f"{path}: missing column(s) {', '.join(missing)} (need ra,dec{alt}; found {', '.join(names)})"
        + (" " + " ".join(hints) if hints else "")
    )


def _number(path: Path, row: int, column: str, value: object) -> float:
    """A finite float from one manifest cell.

    Args:
        path: the manifest, for messages.
        row: 1-based data row, for messages.
        column: the column's name, for messages.
        value: the cell as read (text or a table value).

    Returns:
        The value as a finite float.
    """
    try:
        number = float(str(value).strip())
    except ValueError:
        raise GalmocoError(f"{path}: row {row}: {column} {str(value)!r} is not a number") from None
    if not math.isfinite(number):
        raise GalmocoError(f"{path}: row {row}: {column} {str(value)!r} is not a finite number")
    return number


def _check_id(path: Path, row: int, ident: str) -> str:
    """An object id that is safe as a file name.

    Args:
        path: the manifest, for messages.
        row: 1-based data row, for messages.
        ident: the id as read.

    Returns:
        The id without surrounding white space.
    """
    ident = ident.strip()
    # ids become file names (Legacy Survey cubes): refuse anything that could leave the folder
    if not ident or "/" in ident or "\\" in ident or ident.startswith("."):
        raise GalmocoError(f"{path}: row {row}: id {ident!r} is empty or not usable as a file name")
    return ident


def _position_fields(path: Path, row: int, values: list[object],
                     columns: dict[str, int]) -> tuple[object, dict[str, object]]:
    """The validated position (and id) of one ``ra, dec[, id]`` row.

    Args:
        path: the manifest, for messages.
        row: 1-based data row, for messages.
        values: the row's cells, in column order.
        columns: known column name -> cell position (from :func:`_column_index`).

    Returns:
        ``((ra, dec), {"ra": ra, "dec": dec, "id": id})``: the key that identifies a repeated object
        and the row's output fields (ra, dec in degrees; id the DES BASENAME when there is no id column).
    """
    ra = _number(path, row, "ra", values[columns["ra"]])
    dec = _number(path, row, "dec", values[columns["dec"]])
    if not 0.0 <= ra < 360.0:
        raise GalmocoError(f"{path}: row {row}: ra {ra} is outside [0, 360)")
    if not -90.0 <= dec <= 90.0:
        raise GalmocoError(f"{path}: row {row}: dec {dec} is outside [-90, 90]")
    if "id" in columns:
        ident = _check_id(path, row, str(values[columns["id"]]))
    else:
        ident = des_basename(ra, dec)
    return (ra, dec), {"ra": ra, "dec": dec, "id": ident}


def _coadd_fields(path: Path, row: int, values: list[object],
                  columns: dict[str, int]) -> tuple[object, dict[str, object]]:
    """The validated ``COADD_OBJECT_ID`` of one row.

    Args:
        path, row, values, columns: as for :func:`_position_fields`.

    Returns:
        ``(id, {"coadd_object_id": id})``: the key that identifies a repeated object and the row's
        output field.
    """
    text = str(values[columns["coadd_object_id"]]).strip()
    if not text.isdigit():
        raise GalmocoError(f"{path}: row {row}: COADD_OBJECT_ID {text!r} is not a positive integer")
    key = int(text)
    return key, {"coadd_object_id": key}


def _parse_rows(path: Path, names: list[str], rows: list[list[object]], columns: dict[str, int],
                by_position: bool) -> tuple[dict[str, list], list[tuple[int, int]]]:
    """Validate every row and drop repeated objects (the first is kept).

    Args:
        path: the manifest, for messages.
        names: the header's column names.
        rows: the raw row values.
        columns: known column name -> cell position (from :func:`_column_index`).
        by_position: the manifest gives ``ra, dec`` (else ``COADD_OBJECT_ID``).

    Returns:
        The output columns (``row``, ``ra``, ``dec``, ``id``, ``coadd_object_id``; those the manifest
        does not use stay empty) and the ``(row, row_it_repeats)`` pairs of the dropped rows.
    """
    fields_of = _position_fields if by_position else _coadd_fields
    out: dict[str, list] = {"row": [], "ra": [], "dec": [], "id": [], "coadd_object_id": []}
    seen: dict[object, int] = {}
    duplicates: list[tuple[int, int]] = []
    for number, values in enumerate(rows, start=1):
        if len(values) != len(names):
            raise GalmocoError(f"{path}: row {number}: {len(values)} values for {len(names)} columns "
                               f"({', '.join(names)})")
        key, fields = fields_of(path, number, values, columns)
        if key in seen:
            duplicates.append((number, seen[key]))
            continue
        for name, value in fields.items():
            out[name].append(value)
        seen[key] = number
        out["row"].append(number)
    return out, duplicates


def _check_unique_ids(path: Path, rows: list[int], ids: list[str]) -> None:
    """Refuse an id given to two different positions (their cutouts would share a file name).

    Args:
        path: the manifest, for messages.
        rows: 1-based data rows of the kept objects.
        ids: their ids, in the same order.

    Returns:
        Nothing; raises GalmocoError naming the first row whose id repeats an earlier one.
    """
    first: dict[str, int] = {}
    for row, ident in zip(rows, ids, strict=True):
        if ident in first:
            raise GalmocoError(f"{path}: row {row}: id {ident!r} repeats row {first[ident]} at another "
                               "position")
        first[ident] = row


def _manifest_table(out: dict[str, list], by_position: bool) -> Table:
    """The manifest table of the parsed columns.

    Args:
        out: the columns from :func:`_parse_rows`.
        by_position: the manifest gives ``ra, dec`` (else ``COADD_OBJECT_ID``).

    Returns:
        ``row, ra, dec, id`` (int64, float64 degrees, float64 degrees, str) or ``row, coadd_object_id``
        (int64, int64).
    """
    if by_position:
        return Table(
            [np.array(out["row"], np.int64), np.array(out["ra"], np.float64),
             np.array(out["dec"], np.float64), np.array(out["id"], str)],
            names=("row", "ra", "dec", "id"),
        )
    return Table(
        [np.array(out["row"], np.int64), np.array(out["coadd_object_id"], np.int64)],
        names=("row", "coadd_object_id"),
    )


def read_manifest(path: str | Path, allow_coadd_ids: bool = True) -> Table:
    """Read and validate a manifest.

    Args:
        path: a ``.csv``, ``.ecsv`` or ``.fits`` table with ``ra, dec[, id]`` in degrees, or
            ``COADD_OBJECT_ID``.
        allow_coadd_ids: accept a ``COADD_OBJECT_ID`` manifest (DESaccess only).

    Returns:
        A table with ``row`` (1-based manifest row, int64) and either ``ra, dec`` (float64 degrees)
        and ``id`` (str; the DES BASENAME of the position when the manifest has no id), or
        ``coadd_object_id`` (int64). Duplicate objects are dropped (the first is kept) and listed in
        ``table.meta["duplicates"]`` as ``(row, row_it_repeats)`` pairs.

    Raises:
        GalmocoError: unreadable or empty file, missing/misspelled column, a value that is not a
            number, RA outside [0, 360), Dec outside [-90, 90]; the message names the row.
    """
    path = Path(path)
    if not path.is_file():
        raise GalmocoError(f"{path}: manifest not found")
    names, rows = _read_rows(path)
    columns = _column_index(path, names, allow_coadd_ids)
    if not rows:
        raise GalmocoError(f"{path}: the manifest has a header but no rows")
    by_position = "ra" in columns and "dec" in columns
    out, duplicates = _parse_rows(path, names, rows, columns, by_position)
    if by_position:
        _check_unique_ids(path, out["row"], out["id"])
    table = _manifest_table(out, by_position)
    table.meta["duplicates"] = duplicates
    table.meta["source"] = str(path)
    for row, earlier in duplicates:
        log.warning("%s: row %d repeats row %d; fetching it once", path, row, earlier)
    return table
