"""An approximate DES footprint and coadd tiling: where simulated objects are and which tile holds them.

DES coadd tiles are 10000 x 10000 pixels of 0.263 arcsec (0.7306 deg on a side) on a gnomonic (TAN)
projection about the tile centre, named ``DES`` + HHMM of the centre's RA + sign + DDMM of its Dec
(e.g. ``DES0226-1541``). Here tiles sit in Dec rows one tile high; each row holds as many tiles as fit
around the sky at its widest (most equatorial) edge, so every position of a row falls inside its
nearest tile. Positions within half a stamp of a tile edge get trimmed cutouts, as at DESaccess.

The footprint is the union of two boxes, a rough stand-in for the real 5000 deg2: the wide area
(RA -60..100, Dec -65..-25) and the equatorial strip (RA -45..45, Dec -25..+5, which gives tiles
with ``+`` names).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from galmoco.surveys import DES_PIXEL_SCALE

__all__ = [
    "TILE_PIXELS",
    "FOOTPRINT_BOXES",
    "Tile",
    "tile_name",
    "tile_of",
    "in_footprint",
    "world_to_tile_pixel",
    "tile_pixel_to_world",
    "draw_positions",
]

TILE_PIXELS = 10000
PIXEL_SCALE = DES_PIXEL_SCALE
_TILE_DEG = TILE_PIXELS * PIXEL_SCALE / 3600.0
_DEC_MIN = -66.0  # row 0 starts here

#: (ra_min, ra_max, dec_min, dec_max) in degrees; ra_min may be negative (wraps through 0)
FOOTPRINT_BOXES: tuple[tuple[float, float, float, float], ...] = (
    (-60.0, 100.0, -65.0, -25.0),
    (-45.0, 45.0, -25.0, 5.0),
)


@dataclass(frozen=True)
class Tile:
    """A coadd tile: name, centre (deg) and grid indices."""

    name: str
    ra: float
    dec: float
    row: int
    col: int


def tile_name(ra: float, dec: float) -> str:
    """DES tile name of a tile centred at (ra, dec) degrees, e.g. ``DES0226-1541``."""
    minutes_ra = int(round((ra % 360.0) / 15.0 * 60.0)) % (24 * 60)
    minutes_dec = int(round(abs(dec) * 60.0))
    sign = "-" if dec < 0 else "+"
    return (
        f"DES{minutes_ra // 60:02d}{minutes_ra % 60:02d}{sign}{minutes_dec // 60:02d}{minutes_dec % 60:02d}"
    )


@cache
def _row(row: int) -> tuple[float, int]:
    """Centre Dec of a row and its number of tiles (fitting at the row's most equatorial edge)."""
    dec_c = _DEC_MIN + (row + 0.5) * _TILE_DEG
    widest = min(abs(dec_c - 0.5 * _TILE_DEG), abs(dec_c + 0.5 * _TILE_DEG))
    if (dec_c - 0.5 * _TILE_DEG) * (dec_c + 0.5 * _TILE_DEG) < 0:  # the row straddles the equator
        widest = 0.0
    return dec_c, int(np.ceil(360.0 * np.cos(np.radians(widest)) / (_TILE_DEG * 0.995)))


def tile_of(ra: float, dec: float) -> Tile:
    """The tile whose row and column contain (ra, dec) degrees."""
    row = int(np.floor((dec - _DEC_MIN) / _TILE_DEG))
    dec_c, n = _row(row)
    col = int(np.floor((ra % 360.0) / (360.0 / n) + 0.5)) % n
    ra_c = col * 360.0 / n
    return Tile(tile_name(ra_c, dec_c), ra_c, dec_c, row, col)


def in_footprint(ra: float, dec: float) -> bool:
    """Whether (ra, dec) degrees lies in the simulated footprint."""
    ra_w = ((ra + 180.0) % 360.0) - 180.0  # -180..180
    return any(lo <= ra_w < hi and dlo <= dec <= dhi for lo, hi, dlo, dhi in FOOTPRINT_BOXES)


def world_to_tile_pixel(tile: Tile, ra: float, dec: float) -> tuple[float, float]:
    """0-based (x, y) pixel of (ra, dec) in the tile's TAN projection (x grows to the east-left, as DES).

    Gnomonic projection (Calabretta & Greisen 2002) with CD = diag(-scale, scale) and the tangent
    point at the tile centre, pixel (4999.5, 4999.5) 0-based (CRPIX 5000.5).
    """
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(tile.ra), np.radians(tile.dec)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    scale = np.radians(PIXEL_SCALE / 3600.0)
    c = (TILE_PIXELS - 1) / 2.0
    return float(c - xi / scale), float(c + eta / scale)


def tile_pixel_to_world(tile: Tile, x: float, y: float) -> tuple[float, float]:
    """Inverse of :func:`world_to_tile_pixel`: (ra, dec) degrees of 0-based tile pixel (x, y)."""
    scale = np.radians(PIXEL_SCALE / 3600.0)
    c = (TILE_PIXELS - 1) / 2.0
    xi, eta = -(x - c) * scale, (y - c) * scale
    a0, d0 = np.radians(tile.ra), np.radians(tile.dec)
    den = np.cos(d0) - eta * np.sin(d0)
    a = a0 + np.arctan2(xi, den)
    d = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return float(np.degrees(a) % 360.0), float(np.degrees(d))


def _uniform_in_footprint(rng: np.random.Generator) -> tuple[float, float]:
    """A position uniform on the sphere within the footprint boxes (area-weighted)."""
    areas = np.array(
        [(hi - lo) * (np.sin(np.radians(dh)) - np.sin(np.radians(dl))) for lo, hi, dl, dh in FOOTPRINT_BOXES]
    )
    lo, hi, dl, dh = FOOTPRINT_BOXES[int(rng.choice(len(areas), p=areas / areas.sum()))]
    ra = rng.uniform(lo, hi) % 360.0
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dl)), np.sin(np.radians(dh)))))
    return float(ra), float(dec)


def draw_positions(
    n: int, rng: np.random.Generator, size: int = 64, trimmed_fraction: float = 0.02
) -> np.ndarray:
    """``n`` distinct positions (RA, Dec deg, rounded to 1e-6 deg as DESaccess rounds them).

    A fraction ``trimmed_fraction`` lies within ``size/2`` pixels of the top or bottom edge of its
    tile (trimmed on one side, or two near a corner); the others at least ``size/2 + 1`` pixels
    inside every edge (untrimmed).

    Returns:
        ``(n, 2)`` float64 array.
    """
    out: list[tuple[float, float]] = []
    seen: set[tuple[float, float]] = set()
    half = size / 2 + 1
    while len(out) < n:
        ra, dec = _uniform_in_footprint(rng)
        tile = tile_of(ra, dec)
        if rng.uniform() < trimmed_fraction:
            # move to the tile's top or bottom pixel rows, keeping x
            x, _ = world_to_tile_pixel(tile, ra, dec)
            y = rng.uniform(1.0, size / 2 - 1)
            y = y if rng.uniform() < 0.5 else TILE_PIXELS - 1 - y
            ra, dec = tile_pixel_to_world(tile, x, y)
            if not in_footprint(ra, dec) or tile_of(ra, dec) != tile:
                continue
        else:
            x, y = world_to_tile_pixel(tile, ra, dec)
            if min(x, y) < half or max(x, y) > TILE_PIXELS - 1 - half:
                continue
        key = (round(ra, 6), round(dec, 6))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return np.array(out, dtype=np.float64).reshape(n, 2)
