"""galmoco.contract: checks in one line naming both values; the docstring example runs."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import galmoco.contract as contract_module
from galmoco.contract import DataContract
from galmoco.errors import GalmocoError
from galmoco.io.store import read_store_contract, write_store

MODEL = DataContract("griz", (64, 64), 0.263, 30.0, "counts", {"method": "asinh"}, (1.0, 2.0, 3.0, 4.0))


@pytest.mark.parametrize(("data", "message"), [
    (DataContract("rigz", 64, 0.263, 30.0, "counts"), "bands 'rigz' (4, in this order) but m.pt was trained "
                                                      "on 'griz' (4)"),
    (DataContract("gri", 64, 0.263, 30.0, "counts"), "bands 'gri' (3, in this order) but m.pt was trained on "
                                                     "'griz' (4)"),
    (DataContract("griz", 48, 0.263, 30.0, "counts"), "stamps are 48x48 pixels but m.pt was trained on "
                                                      "64x64"),
    (DataContract("griz", 64, 0.263, 30.0, "nanomaggies"), "flux units 'nanomaggies' but m.pt was trained on "
                                                           "'counts'"),
    (DataContract("griz", 64, 0.263, 22.5, "counts"), "zero point 22.5 mag but m.pt was trained on 30"),
    (DataContract("griz", 64, 0.262, 30.0, "counts"), None),  # within 1%: the same survey pixel
    (DataContract("griz", 64, 0.5, 30.0, "counts"), "pixel scale 0.5000 arcsec but m.pt was trained on "
                                                    "0.2630"),
    (DataContract("griz", 64), None),  # unknown values are not checked
])
def test_check_names_both_values_in_one_line(data, message):
    if message is None:
        MODEL.check(data, "d.h5", "m.pt")
        return
    with pytest.raises(GalmocoError) as err:
        MODEL.check(data, "d.h5", "m.pt")
    assert str(err.value).startswith(f"d.h5: {message}") and "\n" not in str(err.value)


def test_allow_size_accepts_another_size_only():
    MODEL.check(DataContract("griz", 48, 0.263, 30.0, "counts"), "d.h5", allow_size=True)
    with pytest.raises(GalmocoError, match="flux units"):
        MODEL.check(DataContract("griz", 48, 0.263, 30.0, "Jy"), "d.h5", allow_size=True)


def test_round_trip_and_store_contract(tmp_path):
    assert DataContract.from_dict(MODEL.to_dict()) == MODEL
    path = write_store(tmp_path / "s.h5", np.zeros((2, 3, 8, 10), np.float32), bands="gri",
                       units="nanomaggies", pixel_scale=0.262, zeropoint=22.5)
    assert read_store_contract(path) == DataContract("gri", (8, 10), 0.262, 22.5, "nanomaggies")


def test_docstring_examples_run():
    result = doctest.testmod(contract_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
