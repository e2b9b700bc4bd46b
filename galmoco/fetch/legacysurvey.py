"""Legacy Surveys viewer ``fits-cutout`` requests: one ``(bands, size, size)`` cube per object.

Quirks handled (legacysurvey/imagine, see ``shared/reference/des-services.md``): an unknown layer
answers HTTP 200 with the text "no such layer" (stops the run: every request would fail); a position
with no overlap answers HTTP 500 (recorded as out of footprint after a bounded number of tries);
``size`` must be an integer (``64.0`` is an HTTP 500) and is kept <= 512.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch.engine import Download, FatalServiceError
from galmoco.fetch.verify import FITS_MAGIC, verify_legacy_cube

__all__ = ["DEFAULT_URL", "MAX_SIZE", "check_size", "cube_downloads", "check_fits_reply"]

DEFAULT_URL = "https://www.legacysurvey.org/viewer"
#: largest side the client asks for (the viewer's practical limit)
MAX_SIZE = 512


def check_size(size: int) -> int:
    """Refuse sizes the viewer cannot serve, before any request.

    Args:
        size: cutout side in pixels.

    Returns:
        ``size`` as an int.

    Raises:
        GalmocoError: not a positive integer, or over :data:`MAX_SIZE`.
    """
    if isinstance(size, float) and not size.is_integer():
        raise GalmocoError(f"--size {size}: the Legacy Survey viewer takes an integer number of pixels")
    if not 0 < int(size) <= MAX_SIZE:
        raise GalmocoError(f"--size {size}: Legacy Survey cutouts must be 1 to {MAX_SIZE} pixels")
    return int(size)


def check_fits_reply(layer: str, url: str) -> Callable[[bytes], None]:
    """A body check that turns a 200 text reply (e.g. "no such layer") into a run-stopping error."""

    def check(body: bytes) -> None:
        if not body.startswith(FITS_MAGIC):
            text = body[:100].decode("utf-8", "replace").strip()
            raise FatalServiceError(
                f"{url}: layer {layer!r}: the viewer replied {text!r} instead of a FITS file"
            )

    return check


def cube_downloads(table: Table, out: Path, url: str, layer: str, bands: str, size: int,
                   pixscale: float) -> list[Download]:
    """One download per manifest row: ``<out>/<id>.fits``.

    Args:
        table: validated manifest with ``ra``, ``dec``, ``id``.
        out: output folder.
        url: viewer base, e.g. ``https://www.legacysurvey.org/viewer``.
        layer: e.g. ``ls-dr10`` or ``des-dr1``.
        bands: e.g. ``griz``.
        size: side in pixels (checked with :func:`check_size`).
        pixscale: arcsec per pixel.
    """
    size = check_size(size)
    endpoint = f"{url.rstrip('/')}/fits-cutout"
    check = check_fits_reply(layer, endpoint)
    downloads = []
    for ra, dec, ident in zip(table["ra"], table["dec"], table["id"], strict=True):
        query = urlencode({"ra": f"{float(ra)!r}", "dec": f"{float(dec)!r}", "layer": layer,
                           "pixscale": f"{pixscale:g}", "size": str(size), "bands": bands})
        downloads.append(Download(
            f"{endpoint}?{query}", out / f"{ident}.fits",
            lambda p: verify_legacy_cube(p, bands, size), key=str(ident),
            on_server_error="out_of_footprint", check_body=check,
        ))
    return downloads
