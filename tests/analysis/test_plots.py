"""Colour images of stamps: bands reach lupton_rgb blue to red whatever the store's band order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from galmoco.analysis.plots import lupton_rgb, rgb_band_order

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_latent_space.ipynb"


def _one_band_lit(bands: str, lit: str) -> np.ndarray:
    """A ``(1, B, 8, 8)`` stamp with flux only in band ``lit``."""
    stamps = np.zeros((1, len(bands), 8, 8), np.float32)
    stamps[0, bands.index(lit)] = 100.0
    return stamps


def test_band_order_is_blue_to_red():
    assert rgb_band_order("griz") == [0, 1, 2]
    assert rgb_band_order("zirg") == [3, 2, 1]
    assert rgb_band_order(("r", "z", "i")) == [0, 2, 1]  # no g: r, i, z by wavelength
    assert rgb_band_order("zr") == [1, 0]


def test_i_band_flux_is_red_and_g_band_flux_is_blue_in_any_store_order():
    for bands in ("griz", "irgz", "zirg"):
        red = lupton_rgb(_one_band_lit(bands, "i"), stretch=10.0, bands=bands)[0, 4, 4]
        blue = lupton_rgb(_one_band_lit(bands, "g"), stretch=10.0, bands=bands)[0, 4, 4]
        assert red[0] > 0 and red[2] == 0, (bands, red)
        assert blue[2] > 0 and blue[0] == 0, (bands, blue)
        ordered = _one_band_lit(bands, "i")[:, rgb_band_order(bands)]
        assert np.array_equal(lupton_rgb(ordered, stretch=10.0)[0, 4, 4], red)


def test_every_colour_image_is_told_its_bands():
    # the report's grids and galleries, the explorer's thumbnails and the notebook
    code = "".join("".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"]
                   if c["cell_type"] == "code").splitlines()
    for path in sorted((NOTEBOOK.parents[1] / "galmoco").rglob("*.py")):
        code += [line for line in path.read_text().splitlines() if "def lupton_rgb" not in line]
    calls = [line for line in code if re.search(r"(?<!make_)lupton_rgb\(", line)]
    assert len(calls) >= 4 and all("bands=" in line for line in calls), calls
