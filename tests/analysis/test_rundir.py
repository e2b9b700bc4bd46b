"""Defaults of the analysis files kept in a run directory."""

import numpy as np
from astropy.table import Table

from galmoco.analysis.rundir import PHYSICAL_COLUMNS, default_probe_columns


def test_default_probes_are_the_physical_truth_columns():
    table = Table({"id": ["a", "b"], "ra": [1.0, 2.0], "trimmed": [False, False], "index": [0, 1],
                   "hlr_arcsec": [0.5, 0.9], "class": ["spiral", "elliptical"], "latent": np.ones((2, 3))})
    assert default_probe_columns(table) == [c for c in PHYSICAL_COLUMNS if c in ("class", "hlr_arcsec")]


def test_default_probes_without_truth_skip_constant_and_bookkeeping_columns():
    table = Table({"id": ["a", "b"], "dec": [1.0, 2.0], "trimmed": [False, False], "flux": [3.0, 4.0],
                   "latent": np.ones((2, 3))})
    assert default_probe_columns(table) == ["flux"]
