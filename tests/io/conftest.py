"""Writers of real FITS files in every layout galmoco.io reads (fitsio and astropy, as the services do).

Each writer returns the arrays it wrote so tests can compare value for value.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits

PIXEL_SCALE = 0.263


def des_header(ra: float, dec: float, shape: tuple[int, int], crpix_shift: tuple[float, float] = (0.0, 0.0),
               band: str | None = None) -> list[dict]:
    """A DESaccess-like SCI header: TAN WCS centred on (ra, dec), RA_CUTOUT/DEC_CUTOUT, MAGZERO.

    ``crpix_shift`` moves CRPIX (x, y) as trimming that many columns/rows off the left/bottom does.
    """
    cd = PIXEL_SCALE / 3600.0
    cards = {"EXTNAME": "SCI", "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
             "CRPIX1": (shape[1] + 1) / 2 + crpix_shift[0], "CRPIX2": (shape[0] + 1) / 2 + crpix_shift[1],
             "CD1_1": -cd, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": cd, "RA_CUTOUT": ra, "DEC_CUTOUT": dec,
             "MAGZERO": 30.0, "TILENAME": "DES0226-1541"}
    if band:
        cards["BAND"] = band
    return [{"name": k, "value": v} for k, v in cards.items()]


def write_des_file(path: Path, image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None = None,
                   header: list[dict] | None = None, compress: bool = False) -> Path:
    """One DESaccess band file: HDU0 SCI (or HDU1 when compressed), then MSK, then WGT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(image.shape, np.int16) if mask is None else mask
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        kw = {"compress": "GZIP", "qlevel": None} if compress else {}
        f.write(image, header=header, extname="SCI" if compress else None, **kw)
        f.write(mask, extname="MSK")
        f.write(weight, extname="WGT")
    return path


def des_object(root: Path, name: str, bands: str = "griz", shape: tuple[int, int] = (16, 16),
               seed: int = 0, ra: float = 21.58813, dec: float = 3.48611, **kw) -> dict:
    """A POSDIR folder ``root/<name>/<name>_<band>.fits``; returns the folder, images and weights."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 5.0, (len(bands), *shape)).astype(np.float32)
    weight = rng.uniform(0.02, 0.05, (len(bands), *shape)).astype(np.float32)
    folder = root / name
    for i, band in enumerate(bands):
        write_des_file(folder / f"{name}_{band}.fits", image[i], weight[i],
                       header=des_header(ra, dec, shape, band=band), **kw)
    return {"folder": folder, "image": image, "weight": weight, "bands": bands, "ra": ra, "dec": dec}


def des_clones(root: Path, n: int, shape: tuple[int, int] = (8, 8)) -> list[np.ndarray]:
    """``n`` single-band (g) POSDIR objects ``root/DESJ<i>`` fast: the first written by fitsio, the rest
    byte copies of it with their own SCI data (object i holds ``ramp + i``). Returns the images."""
    ramp = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    first = write_des_file(root / "DESJ00000" / "DESJ00000_g.fits", ramp, np.ones(shape, np.float32),
                           header=des_header(10.0, -5.0, shape, band="g"))
    with fitsio.FITS(str(first)) as f:
        start = f[0].get_offsets()["data_start"]
    raw = bytearray(first.read_bytes())
    images = [ramp + i for i in range(n)]
    for i in range(1, n):
        raw[start: start + ramp.nbytes] = images[i].astype(">f4").tobytes()
        folder = root / f"DESJ{i:05d}"
        folder.mkdir(parents=True)
        (folder / f"DESJ{i:05d}_g.fits").write_bytes(raw)
    return images


def ls_cube(path: Path, bands: str = "griz", shape: tuple[int, int] = (16, 16), seed: int = 0,
            sigma: float = 0.01, compress: bool = False) -> np.ndarray:
    """A Legacy Survey viewer cube (astropy, as the viewer writes): (nb, H, W) or (H, W) for one band."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.0, sigma, (len(bands), *shape)).astype(np.float32)
    data = cube[0] if len(bands) == 1 else cube
    header = afits.Header({"SURVEY": "LegacySurvey", "VERSION": "DR10", "BANDS": bands,
                           "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                           "CRPIX1": (shape[1] + 1) / 2, "CRPIX2": (shape[0] + 1) / 2,
                           "CD1_1": -0.262 / 3600, "CD2_2": 0.262 / 3600})
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with fitsio.FITS(str(path), "rw", clobber=True) as f:
            cards = [{"name": k, "value": v} for k, v in header.items()]
            f.write(data, compress="GZIP", qlevel=None, header=cards)
    else:
        afits.PrimaryHDU(data, header=header).writeto(path)
    return cube


def scaled_int_des(path: Path, raw: np.ndarray, bscale: float, bzero: float, blank: int) -> Path:
    """A single-band file whose SCI is a scaled int16 image with BLANK pixels (written by astropy)."""
    hdu = afits.PrimaryHDU(raw.astype(np.int16))
    hdu.header.update({"BSCALE": bscale, "BZERO": bzero, "BLANK": blank, "BAND": "r"})
    hdu.writeto(path)
    return path


@pytest.fixture
def writers() -> SimpleNamespace:
    """The FITS writers of this module."""
    return SimpleNamespace(des_object=des_object, des_clones=des_clones, des_header=des_header,
                           write_des_file=write_des_file,
                           ls_cube=ls_cube, scaled_int_des=scaled_int_des)
