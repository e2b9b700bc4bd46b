"""The output is the file layout of a finished DESaccess cutout job, with truth next to it."""

from __future__ import annotations

import csv
import json
import re

import fitsio
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galmoco.fetch.manifest import des_basename
from galmoco.sim.footprint import draw_positions, in_footprint, tile_name, tile_of
from galmoco.sim.layout import POSITION_COLUMNS, size_arcmin

BASENAME = re.compile(r"^DESJ\d{6}\.\d{4}[+-]\d{6}\.\d{4}$")
TILE = re.compile(r"^DES\d{4}[+-]\d{4}$")


def test_basename_of_known_position():
    assert des_basename(21.58813, 3.48611) == "DESJ012621.1512+032909.9960"


def test_tile_names_are_well_formed_and_include_north():
    rng = np.random.default_rng(0)
    pos = draw_positions(300, rng)
    names = {tile_of(ra, dec).name for ra, dec in pos}
    assert all(TILE.match(n) for n in names)
    assert any("+" in n for n in names) and any("-" in n for n in names)
    assert all(in_footprint(ra, dec) for ra, dec in pos)
    assert tile_name(36.5, -15.69) == "DES0226-1541"
    assert size_arcmin(64) == 0.2805 and round(0.2805 * 60 / 0.263) == 64


def test_job_layout(small_job):
    jobid = small_job.name
    assert re.fullmatch(r"[0-9a-f]{32}", jobid)
    top = sorted(p.name for p in small_job.iterdir())
    tiles = [n for n in top if TILE.match(n)]
    assert set(top) - set(tiles) == {f"cutout_{jobid}.log", f"positions_{jobid}.csv", "summary.json"}
    truth = Table.read(small_job.parent / "truth.fits")
    assert len(truth) == 40 and (small_job.parent / "truth.ecsv").exists()
    for row in truth:
        folder = small_job / row["tilename"] / row["id"]
        assert BASENAME.match(row["id"]) and row["id"] == des_basename(row["ra"], row["dec"])
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{row['id']}_{b}.fits" for b in "griz")
    summary = json.loads((small_job / "summary.json").read_text())
    assert list(summary) == [
        "options",
        "cutouts",
        "query_time",
        "unmatched_positions",
        "processing_time",
        "size_on_disk",
        "number_of_files",
    ]
    assert summary["number_of_files"] == 160 and summary["options"]["colors_fits"] == "griz"
    assert summary["unmatched_positions"] == {"coord": {"RA": [], "DEC": []}, "coadd": []}
    first = summary["cutouts"][0]
    assert first["POSITION_TYPE"] == "coord" and len(first["FILES"]) == 4
    assert first["FILES"][0] == f"{first['SEXAGECIMAL']}_g.fits"
    with open(small_job / f"positions_{jobid}.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == POSITION_COLUMNS and len(rows) == 40
    assert [r["TILENAME"] for r in rows] == sorted(r["TILENAME"] for r in rows)
    assert (small_job.parent / "preview.png").stat().st_size > 10_000


def test_fits_headers_and_wcs(small_job):
    truth = Table.read(small_job.parent / "truth.fits")
    assert truth["trimmed"].any() and not truth["trimmed"].all()
    for row in truth:
        path = small_job / row["tilename"] / row["id"] / f"{row['id']}_r.fits"
        with fits.open(path) as hdul:
            hdul.verify("exception")
            assert [h.name for h in hdul] == ["SCI", "MSK", "WGT"]
            sci, msk, wgt = (h for h in hdul)
            assert sci.data.dtype == np.dtype(">f4") and msk.data.dtype == np.dtype(">i4")
            assert sci.data.shape == (row["height"], row["width"]) == wgt.data.shape
            assert row["trimmed"] == (sci.data.shape != (64, 64))
            h = sci.header
            assert (h["BAND"], h["TILENAME"], h["MAGZERO"]) == ("r", row["tilename"], 30.0)
            assert (h["RA_CUTOUT"], h["DEC_CUTOUT"]) == (row["ra"], row["dec"])
            # CRPIX is the 0-based pixel of the requested position, as DESaccess writes it
            ra, dec = WCS(h).wcs_pix2world(h["CRPIX1"], h["CRPIX2"], 0)
            assert abs(ra - row["ra"]) * np.cos(np.radians(dec)) * 3600 < 0.01
            assert abs(dec - row["dec"]) * 3600 < 0.01
            # WGT is the inverse sky variance recorded in the truth
            assert np.allclose(wgt.data[msk.data == 0], row["sky_sigma_r"] ** -2, rtol=1e-6)
        assert fitsio.read_header(str(path), 0)["EXTNAME"].strip() == "SCI"
