"""FITS cutouts in, one packed HDF5 store out, read access to it, and the table files of the pipeline.

- :mod:`galmoco.io.sources`: which files make up one object's cutout (DESaccess POSDIR folders,
  Legacy Survey cubes) and its id;
- :mod:`galmoco.io.fits`: reads one object's cutout (DESaccess, Legacy Survey, ``.fits.fz``);
- :mod:`galmoco.io.pack`: packs many into a store (:mod:`galmoco.io.pack_read` reads the sources in
  parallel, :mod:`galmoco.io.pack_store` is the locked, resumable ``.partial`` file,
  :mod:`galmoco.io.catalog_join` joins a catalogue into it);
- :mod:`galmoco.io.store`: reads the store (and provides the torch Dataset);
- :mod:`galmoco.io.storeset`: several store files read as one;
- :mod:`galmoco.io.tables`: catalogue and embedding tables (parquet, FITS, HDF5, CSV).
"""

from galmoco.io.fits import Cutout, read_cutout
from galmoco.io.pack import PackResult, pack_cutouts
from galmoco.io.sources import find_cutouts
from galmoco.io.store import CutoutDataset, CutoutStore, read_catalog, write_store
from galmoco.io.tables import read_table, write_table

__all__ = ["Cutout", "CutoutDataset", "CutoutStore", "PackResult", "find_cutouts", "pack_cutouts",
           "read_catalog", "read_cutout", "read_table", "write_store", "write_table"]
