"""galmoco.surveys: the survey constants and band validation every layer uses."""

from __future__ import annotations

import pytest

from galmoco import surveys
from galmoco.errors import GalmocoError


def test_constants():
    assert (surveys.DES_PIXEL_SCALE, surveys.DES_ZEROPOINT) == (0.263, 30.0)
    assert (surveys.LEGACY_PIXEL_SCALE, surveys.LEGACY_ZEROPOINT) == (0.262, 22.5)
    assert surveys.BAND_ORDER == "grizy"


def test_parse_bands():
    assert surveys.parse_bands("GriZ") == ("g", "r", "i", "z")
    assert surveys.parse_bands(("z", "g")) == ("z", "g")  # the order asked for is kept
    for bad in ("", "gg", "gru"):
        with pytest.raises(GalmocoError, match=f"--bands '{bad}': give distinct letters from 'grizy'"):
            surveys.parse_bands(bad, "--bands")
    with pytest.raises(GalmocoError, match="bands='gx'"):
        surveys.parse_bands("gx", "bands=")
