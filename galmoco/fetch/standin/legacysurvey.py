"""A local Legacy Surveys viewer: ``/viewer/fits-cutout`` with the real service's quirks."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io import fits

from galmoco.fetch.standin.base import StandinHandler, StandinServer, blob_image, fits_bytes

__all__ = ["LegacySurveyServer"]


class LegacySurveyServer(StandinServer):
    """``/viewer/fits-cutout``: cubes in nanomaggies, zero outside ``footprint``, HTTP 500 with no overlap."""

    LAYERS = {"ls-dr10": "griz", "des-dr1": "grizY", "ls-dr9": "grz"}

    def __init__(self, footprint: tuple[float, float, float, float] = (0.0, 360.0, -70.0, 10.0),
                 port: int = 0) -> None:
        super().__init__(_LegacyHandler, port)
        self.footprint = footprint
        self.viewer = f"{self.url}/viewer"


class _LegacyHandler(StandinHandler):
    server: LegacySurveyServer

    def handle_route(self, method: str) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/viewer/fits-cutout" or method != "GET":
            return self._send(404, b"not found", "text/plain")
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if "ra" not in q or "dec" not in q:
            return self._send(400, b"Need ra,dec keywords", "text/plain")
        layer = q.get("layer", "ls-dr9")
        if layer not in self.server.LAYERS:
            return self._send(200, b"no such layer", "text/plain")  # the quirk: 200, not FITS
        try:
            size = int(q.get("size", "256"))  # "64.0" is an int() error: HTTP 500 like the real viewer
        except ValueError:
            return self._send(500, b"Internal Server Error", "text/plain")
        ra, dec, scale = float(q["ra"]), float(q["dec"]), float(q.get("pixscale", "0.262"))
        bands = q.get("bands", self.server.LAYERS[layer])
        if any(b not in self.server.LAYERS[layer] for b in bands):
            bands = self.server.LAYERS[layer]  # one bad letter: all the layer's bands, silently
        y, x = np.mgrid[:size, :size]
        pix_ra = ra - (x - size / 2) * scale / 3600 / np.cos(np.radians(dec))
        pix_dec = dec + (y - size / 2) * scale / 3600
        ra_lo, ra_hi, dec_lo, dec_hi = self.server.footprint
        covered = (pix_ra >= ra_lo) & (pix_ra < ra_hi) & (pix_dec >= dec_lo) & (pix_dec <= dec_hi)
        if not covered.any():
            return self._send(500, b"Internal Server Error", "text/plain")
        shape = (len(bands), size, size) if len(bands) > 1 else (size, size)
        cube = blob_image(f"{ra},{dec}", shape, 10.0) * covered
        header = fits.Header({"SURVEY": "LegacySurvey", "VERSION": layer, "BANDS": bands.lower(),
                              **{f"BAND{i}": b for i, b in enumerate(bands)}, "CTYPE1": "RA---TAN",
                              "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": size / 2 + 0.5,
                              "CRPIX2": size / 2 + 0.5, "CD1_1": -scale / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
                              "CD2_2": scale / 3600})
        self._send(200, fits_bytes([fits.PrimaryHDU(cube.astype(np.float32), header)]), "image/fits")
