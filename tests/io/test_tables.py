"""galmoco.io.tables: formats checked before any work, vector columns refused by CSV up front."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.io.tables import read_table, table_format, write_table


def test_csv_with_vector_columns_is_refused_before_writing(tmp_path):
    with pytest.raises(GalmocoError, match=r"e\.csv: \.csv cannot hold a table with vector columns"):
        write_table(Table({"latent": np.zeros((3, 4))}), tmp_path / "e.csv")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GalmocoError, match="vector columns"):
        table_format(tmp_path / "e.csv", vectors=True)


def test_unknown_suffix_names_the_file(tmp_path):
    with pytest.raises(GalmocoError, match=r"t\.txt: \.txt cannot hold a table"):
        table_format(tmp_path / "t.txt")


def test_scalar_csv_round_trips(tmp_path):
    back = read_table(write_table(Table({"a": [1, 2], "b": ["x", "y"]}), tmp_path / "t.csv"))
    assert list(back["a"]) == [1, 2] and list(back["b"]) == ["x", "y"]


@pytest.mark.parametrize("suffix", [".fits", ".csv", ".parquet"])
def test_written_tables_follow_the_umask(tmp_path, suffix):
    old = os.umask(0o002)
    try:
        path = write_table(Table({"a": [1, 2]}), tmp_path / f"t{suffix}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664
