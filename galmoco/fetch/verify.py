"""Integrity checks for downloaded cutouts: a file is kept only when it parses as the FITS it should be.

Uses fitsio directly (about 4.5x faster than astropy on small cutouts) and reads the data, not only
the header, so a truncated file fails. ``galmoco.io`` is a later layer and is not imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np

__all__ = ["VerifyError", "verify_des_band", "verify_legacy_cube", "verify_json", "FITS_MAGIC"]

#: every FITS file starts with this card
FITS_MAGIC = b"SIMPLE  ="


class VerifyError(Exception):
    """The file is not the cutout it should be; the message says why."""


def _read_primary(path: Path) -> tuple[np.ndarray, fitsio.FITSHDR]:
    with open(path, "rb") as fh:
        if fh.read(len(FITS_MAGIC)) != FITS_MAGIC:
            raise VerifyError("not a FITS file")
    try:
        with fitsio.FITS(str(path)) as fits:
            data = fits[0].read()
            header = fits[0].read_header()
    except Exception as exc:  # fitsio raises OSError/ValueError on truncated or garbled files
        # first line only: fitsio appends a multi-line dump naming the temporary file
        raise VerifyError(f"unreadable FITS: {str(exc).strip().splitlines()[0]}") from None
    if data is None:
        raise VerifyError("FITS primary HDU has no image")
    return data, header


def verify_des_band(path: str | Path, band: str, size: int) -> tuple[int, int]:
    """Check one DESaccess band file: a 2-D image in HDU 0, of the band, at most ``size`` pixels a side.

    DESaccess trims cutouts at tile edges instead of padding them, so a smaller image is valid.

    Args:
        path: the ``<BASENAME>_<band>.fits`` file.
        band: the band the file name says it holds.
        size: requested side in pixels.

    Returns:
        The image shape ``(H, W)``.

    Raises:
        VerifyError: with the reason when the file is not such an image.
    """
    data, header = _read_primary(Path(path))
    if data.ndim != 2:
        raise VerifyError(f"expected a 2-D image, got shape {data.shape}")
    if not (0 < data.shape[0] <= size and 0 < data.shape[1] <= size):
        raise VerifyError(f"image shape {data.shape} does not fit the requested {size}x{size}")
    file_band = str(header.get("BAND", band)).strip().lower()
    if file_band != band:
        raise VerifyError(f"header BAND={file_band!r} but the file name says {band!r}")
    return int(data.shape[0]), int(data.shape[1])


def verify_legacy_cube(path: str | Path, bands: str, size: int) -> None:
    """Check a Legacy Survey cube: ``(len(bands), size, size)`` (or ``(size, size)`` for one band).

    The viewer silently returns all of a layer's bands when a requested letter is invalid, so the
    ``BANDS`` header must match what was asked.

    Args:
        path: the downloaded cube.
        bands: requested bands, e.g. ``"griz"``.
        size: requested side in pixels (the viewer pads with zeros, so the shape is exact).

    Raises:
        VerifyError: with the reason.
    """
    data, header = _read_primary(Path(path))
    expected = (size, size) if len(bands) == 1 else (len(bands), size, size)
    if data.shape != expected:
        raise VerifyError(f"cube shape {data.shape}, expected {expected}")
    got = str(header.get("BANDS", bands)).strip().lower()
    if got != bands:
        raise VerifyError(f"header BANDS={got!r}, requested {bands!r}")


def verify_json(path: str | Path) -> None:
    """Check that a file parses as JSON (a job's ``summary.json``).

    Raises:
        VerifyError: when it does not.
    """
    try:
        json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerifyError(f"not JSON: {exc}") from None
