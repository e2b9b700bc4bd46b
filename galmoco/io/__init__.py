"""FITS cutouts in, one packed HDF5 store out, and read access to it.

``galmoco.io.fits`` reads one object's cutout (DESaccess, Legacy Survey, ``.fits.fz``);
``galmoco.io.pack`` packs many into a store (``galmoco.io.catalog_join`` joins a catalogue into it);
``galmoco.io.store`` reads the store (and provides the torch Dataset). Names are imported lazily so
``import galmoco.io`` does not import torch.
"""

from __future__ import annotations

import importlib

__all__ = ["Cutout", "CutoutDataset", "CutoutStore", "PackResult", "find_cutouts", "pack_cutouts",
           "read_catalog", "read_cutout"]

_HOME = {"Cutout": "fits", "find_cutouts": "fits", "read_cutout": "fits", "PackResult": "pack",
         "pack_cutouts": "pack", "CutoutDataset": "store", "CutoutStore": "store", "read_catalog": "store"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'galmoco.io' has no attribute {name!r}")
    return getattr(importlib.import_module(f"galmoco.io.{_HOME[name]}"), name)
