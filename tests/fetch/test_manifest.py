"""Manifest validation: every error names the row; duplicates are reported and fetched once."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch.manifest import des_basename, read_manifest

from .conftest import write_manifest


def test_des_basename_matches_the_service_example():
    assert des_basename(21.58813, 3.48611) == "DESJ012621.1512+032909.9960"
    assert des_basename(150.0, -2.5) == "DESJ100000.0000-023000.0000"


def test_csv_with_and_without_id(tmp_path):
    t = read_manifest(write_manifest(tmp_path / "a.csv", [(21.58813, 3.48611, "gal1"), (10, -5, "gal2")],
                                     "RA,Dec,ID"))
    assert list(t["id"]) == ["gal1", "gal2"] and t["ra"].dtype == np.float64
    t = read_manifest(write_manifest(tmp_path / "b.csv", [(21.58813, 3.48611)]))
    assert t["id"][0] == "DESJ012621.1512+032909.9960" and list(t["row"]) == [1]


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])
def test_ecsv_and_fits(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    Table({"ra": [1.0, 2.0], "dec": [3.0, 4.0]}).write(path)
    assert len(read_manifest(path)) == 2


def test_coadd_ids(tmp_path):
    path = write_manifest(tmp_path / "c.csv", [(61407318,), (61407319,)], "COADD_OBJECT_ID")
    t = read_manifest(path)
    assert t["coadd_object_id"].dtype == np.int64 and list(t["coadd_object_id"]) == [61407318, 61407319]
    with pytest.raises(GalmocoError, match="DESaccess only"):
        read_manifest(path, allow_coadd_ids=False)


@pytest.mark.parametrize(("header", "rows", "pattern"), [
    ("ra,decl", [(1, 2)], r"missing column\(s\) dec .*did you mean 'decl' for 'dec'"),
    ("rra,dec", [(1, 2)], r"did you mean 'rra' for 'ra'"),
    ("ra,dec", [(1, 2), ("abc", 3)], r"row 2: ra 'abc' is not a number"),
    ("ra,dec", [(1, 2), (3, "nan")], r"row 2: dec 'nan' is not a finite number"),
    ("ra,dec", [(1, 2), (360.0, 3)], r"row 2: ra 360.0 is outside \[0, 360\)"),
    ("ra,dec", [(-0.5, 3)], r"row 1: ra -0.5 is outside"),
    ("ra,dec", [(1, 2), (2, 3), (3, -90.5)], r"row 3: dec -90.5 is outside \[-90, 90\]"),
    ("ra,dec,id", [(1, 2, "a"), (2, 3, "../x")], r"row 2: id '../x'"),
    ("ra,dec,id", [(1, 2, "a"), (2, 3, "a")], r"row 2: id 'a' repeats row 1"),
    ("COADD_OBJECT_ID", [(5,), ("12x",)], r"row 2: COADD_OBJECT_ID '12x'"),
    ("ra,dec", [], r"header but no rows"),
])
def test_errors_name_the_row(tmp_path, header, rows, pattern):
    with pytest.raises(GalmocoError, match=pattern):
        read_manifest(write_manifest(tmp_path / "m.csv", rows, header))


def test_empty_file_and_missing_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(GalmocoError, match="empty"):
        read_manifest(tmp_path / "e.csv")
    with pytest.raises(GalmocoError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_duplicates_reported_and_dropped(tmp_path, caplog):
    t = read_manifest(write_manifest(tmp_path / "d.csv", [(1, 2), (3, 4), (1, 2), (1, 2)]))
    assert list(t["row"]) == [1, 2]
    assert t.meta["duplicates"] == [(3, 1), (4, 1)]
    assert "row 3 repeats row 1" in caplog.text


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffra,dec,id\r\n21.58813,3.48611,gal1\r\n".encode())
    table = read_manifest(path)
    assert list(table["id"]) == ["gal1"] and table["ra"][0] == 21.58813


def test_row_with_too_many_values_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ra,dec\n1,2\n3,4,5\n")
    with pytest.raises(GalmocoError, match=r"m\.csv: row 2: 3 values for 2 columns \(ra, dec\)$"):
        read_manifest(path)
