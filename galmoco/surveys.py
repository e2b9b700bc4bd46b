"""Survey constants and band names: the one home of the numbers every layer agrees on.

- DES coadds (Abbott et al. 2018, "The Dark Energy Survey Data Release 1", ApJS 239, 18; Sevilla-Noarbe
  et al. 2021 for DR2): 0.263 arcsec/pixel, fluxes in counts at AB zero point 30 (``MAGZERO``).
- Legacy Survey cutouts (Dey et al. 2019, AJ 157, 168): 0.262 arcsec/pixel, nanomaggies (zero point 22.5).
- Bands are lowercase one-letter names in wavelength order ``grizy`` (docs/architecture.md).

Imports nothing of galmoco's but :mod:`galmoco.errors`, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from galmoco.errors import GalmocoError

__all__ = ["BAND_ORDER", "DES_PIXEL_SCALE", "DES_PSF_FWHM", "DES_ZEROPOINT", "LEGACY_PIXEL_SCALE",
           "LEGACY_ZEROPOINT", "parse_bands"]

#: the survey bands in wavelength order: the canonical order of a band list
BAND_ORDER = "grizy"
#: DES coadd pixel scale, arcsec/pixel
DES_PIXEL_SCALE = 0.263
#: DES DR2 median PSF FWHM per band, arcsec (Abbott et al. 2021, ApJS 255, 20, table 1)
DES_PSF_FWHM = {"g": 1.11, "r": 0.95, "i": 0.88, "z": 0.83, "y": 0.90}
#: AB magnitude zero point of DES coadd counts (``mag = 30 - 2.5 log10(counts)``)
DES_ZEROPOINT = 30.0
#: Legacy Survey cutout pixel scale, arcsec/pixel
LEGACY_PIXEL_SCALE = 0.262
#: AB magnitude zero point of nanomaggies (``mag = 22.5 - 2.5 log10(flux)``)
LEGACY_ZEROPOINT = 22.5


def parse_bands(bands: str | Sequence[str], option: str = "bands") -> tuple[str, ...]:
    """Validate a band list given as ``"griz"`` or ``("g", "r")`` (case-insensitive); returns it lowercase.

    Args:
        bands: the band names, in the order wanted.
        option: how the error names the setting (``"--bands"``, or ``"bands="`` for a keyword argument).

    Raises:
        GalmocoError: for an empty list, an unknown band or a repeated one.
    """
    out = tuple(b.lower() for b in bands)
    if not out or any(b not in BAND_ORDER for b in out) or len(set(out)) != len(out):
        sep = "" if option.endswith("=") else " "
        raise GalmocoError(f"{option}{sep}{''.join(bands)!r}: give distinct letters from {BAND_ORDER!r}, "
                           "e.g. 'griz'")
    return out
