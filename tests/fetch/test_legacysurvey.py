"""Legacy Survey backend against the local viewer: cubes, quirks, footprint, resume."""

from __future__ import annotations

import csv

import fitsio
import numpy as np
import pytest

from galmoco.errors import GalmocoError
from galmoco.fetch import fetch_cutouts

from .conftest import FAST, POSITIONS, write_manifest


def _summary(out):
    with open(out / "fetch_summary.csv") as fh:
        return list(csv.DictReader(fh))


def test_fetches_one_cube_per_object(tmp_path, legacy_server):
    rows = [(*p, f"obj{i}") for i, p in enumerate(POSITIONS[:4])]
    manifest = write_manifest(tmp_path / "m.csv", rows, "ra,dec,id")
    result = fetch_cutouts(manifest, tmp_path / "out", service="legacysurvey", url=legacy_server.viewer,
                           size=48, workers=3, **FAST)
    assert result.counts == {"fetched": 4} and result.files_fetched == 4
    data, header = fitsio.read(str(tmp_path / "out" / "obj2.fits"), header=True)
    assert data.shape == (4, 48, 48) and data.dtype == np.float32 and header["BANDS"] == "griz"
    assert [r["status"] for r in _summary(tmp_path / "out")] == ["fetched"] * 4


def test_no_overlap_is_out_of_footprint_and_partial_overlap_zero_filled(tmp_path, legacy_server):
    # footprint dec <= 10: dec 10.001 overlaps by 18 rows, dec 30 not at all
    manifest = write_manifest(tmp_path / "m.csv", [(20.0, 10.001), (20.0, 30.0)])
    result = fetch_cutouts(manifest, tmp_path / "out", service="legacysurvey", url=legacy_server.viewer,
                           size=64, **FAST)
    assert result.counts == {"fetched": 1, "out_of_footprint": 1}
    summary = _summary(tmp_path / "out")
    assert summary[1]["status"] == "out_of_footprint" and "HTTP 500 after 4 attempts" in summary[1]["reason"]
    cube = fitsio.read(str(tmp_path / "out" / f"{summary[0]['id']}.fits"))
    assert (cube[:, 20:, :] == 0).all() and (cube[:, :15, :] != 0).all()  # 0.001 deg = 13.7 px covered


def test_unknown_layer_stops_the_run_early(tmp_path, legacy_server):
    manifest = write_manifest(tmp_path / "m.csv", [(10 + i * 0.01, -5.0) for i in range(40)])
    with pytest.raises(GalmocoError, match="layer 'ls-dr99'.*'no such layer' instead of a FITS"):
        fetch_cutouts(manifest, tmp_path / "out", service="legacysurvey", url=legacy_server.viewer,
                      layer="ls-dr99", workers=2, **FAST)
    assert sum(legacy_server.requests.values()) <= 6
    assert not list((tmp_path / "out").glob("*.fits"))


@pytest.mark.parametrize(("size", "arcmin", "pattern"), [(513, None, "1 to 512"), (0, None, "1 to 512"),
                                                         (64.5, None, "integer"), (64, 3.0, "1 to 512")])
def test_sizes_refused_before_any_request(tmp_path, legacy_server, size, arcmin, pattern):
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:1])
    with pytest.raises(GalmocoError, match=pattern):
        fetch_cutouts(manifest, tmp_path / "out", service="legacysurvey", url=legacy_server.viewer,
                      size=size, arcmin=arcmin)
    assert sum(legacy_server.requests.values()) == 0


def test_resume_fetches_nothing_twice(tmp_path, legacy_server):
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:3])
    kwargs = dict(service="legacysurvey", url=legacy_server.viewer, size=32, **FAST)
    fetch_cutouts(manifest, tmp_path / "out", **kwargs)
    result = fetch_cutouts(manifest, tmp_path / "out", resume=True, **kwargs)
    assert result.counts == {"skipped": 3} and result.files_fetched == 0
    assert sum(legacy_server.requests.values()) == 3


def test_coadd_manifest_is_refused(tmp_path, legacy_server):
    manifest = write_manifest(tmp_path / "m.csv", [(5,)], "COADD_OBJECT_ID")
    with pytest.raises(GalmocoError, match="DESaccess only"):
        fetch_cutouts(manifest, tmp_path / "out", service="legacysurvey", url=legacy_server.viewer)
