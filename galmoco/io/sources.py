"""Where cutouts are on disk: which files make up one object's cutout, and the object's id.

A DESaccess job holds one POSDIR folder per object with one ``<BASENAME>_<band>.fits`` per band; a
Legacy Survey viewer cube is one file per object (see ``docs/io.md``). Nothing here opens a FITS file.
"""

from __future__ import annotations

import re
from pathlib import Path

from galmoco.errors import GalmocoError
from galmoco.surveys import BAND_ORDER

__all__ = ["DES_FILE", "FITS_SUFFIXES", "cutout_id", "des_band_files", "find_cutouts", "is_fits_path"]

#: a DESaccess band file name: ``<BASENAME>_<band>.fits`` (also ``.fit``, ``.fz``, ``.gz``)
DES_FILE = re.compile(rf"^(?P<base>.+)_(?P<band>[{BAND_ORDER}])\.(?:fits|fit)(?:\.fz|\.gz)?$")
#: file name endings of FITS files
FITS_SUFFIXES = (".fits", ".fit", ".fits.fz", ".fz", ".fits.gz", ".fit.gz")


def is_fits_path(path: Path) -> bool:
    """True when the file name ends like a FITS file (``.fits``, ``.fit``, ``.fz``, ``.fits.gz``)."""
    return path.name.lower().endswith(FITS_SUFFIXES)


def cutout_id(source: str | Path) -> str:
    """The object id of a cutout source, from its path alone (no file is opened).

    A DESaccess POSDIR folder: its name (the DESJ BASENAME, or the COADD_OBJECT_ID for id rows). A
    single DESaccess band file: its folder's name when that is the BASENAME or all digits (a POSDIR),
    else the BASENAME from the file name. Any other file (a Legacy Survey cube): the file stem.
    """
    path = Path(source)
    if path.is_dir():
        return path.name
    match = DES_FILE.match(path.name)
    if match:
        parent = path.parent.name
        return parent if parent == match["base"] or parent.isdigit() else match["base"]
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def des_band_files(folder: Path) -> dict[str, Path]:
    """``{band: path}`` of the DESaccess band files in a folder; error if it holds several objects."""
    found: dict[str, Path] = {}
    bases = set()
    for path in sorted(folder.iterdir()):
        match = DES_FILE.match(path.name)
        if match and path.is_file():
            bases.add(match["base"])
            found.setdefault(match["band"], path)
    if len(bases) > 1:
        names = ", ".join(sorted(bases)[:3])
        raise GalmocoError(f"{folder}: holds band files of {len(bases)} objects ({names}...); "
                           "a DESaccess POSDIR folder holds one object")
    return found


def find_cutouts(root: str | Path) -> list[Path]:
    """Every cutout source under a folder, sorted: DESaccess POSDIR folders and single cube files.

    A folder whose files match ``<BASENAME>_<band>.fits`` is one source (the POSDIR); any other FITS
    file is a source of its own. PNGs, logs and JSON are ignored.

    Raises:
        GalmocoError: when ``root`` is not a folder, or a folder mixes band files of several objects.
    """
    root = Path(root)
    if not root.is_dir():
        raise GalmocoError(f"{root}: not a folder")
    sources: list[Path] = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if des_band_files(folder):
            sources.append(folder)
        sources.extend(p for p in sorted(folder.iterdir())
                       if p.is_file() and is_fits_path(p) and not DES_FILE.match(p.name))
    return sorted(sources)
