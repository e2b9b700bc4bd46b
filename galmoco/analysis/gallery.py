"""Galleries of search results: each query stamp beside its most similar galaxies (Lupton RGB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.similarity.index import Index

__all__ = ["neighbour_gallery_png"]


def neighbour_gallery_png(index: Index | str | Path, table: Table, out_png: str | Path,
                          query_images: np.ndarray | None = None) -> Path:
    """A PNG with one row per query: the query stamp, then its neighbours (Lupton RGB, distances above).

    Stamps are read from the stores the index's embeddings were made from (recorded in the catalogue);
    FITS queries' stamps are passed as ``query_images`` in the order of their queries.

    Returns:
        The PNG path (a PDF is written beside it).
    """
    from galmoco.analysis.plots import neighbour_gallery
    from galmoco.io.storeset import StoreSet

    index = index if isinstance(index, Index) else Index(index)
    stores = [s for s in str(index.catalog.meta.get("STORE", "")).split(",") if s]
    if not stores or not all(Path(s).is_file() for s in stores):
        listed = ", ".join(stores) or "none recorded"
        raise GalmocoError(f"{index.path}: the stores of the indexed galaxies ({listed}) are not readable "
                           "here; a gallery needs them")
    names = list(dict.fromkeys(table["query"]))
    k = max(int(np.max(table["rank"])), 1)
    lookup = {str(v): i for i, v in enumerate(index.catalog["id"])}
    fits_rows = iter(range(0 if query_images is None else len(query_images)))
    with StoreSet(stores) as data:
        def stamp(row: int) -> np.ndarray:
            return data.read_rows(row, row + 1)[0]
        blank = np.zeros(data.shape, np.float32)
        queries, neighbours, distances = [], [], np.full((len(names), k), np.nan, np.float32)
        for i, name in enumerate(names):
            answer = table[table["query"] == name]
            queries.append(stamp(lookup[name]) if name in lookup else query_images[next(fits_rows)])
            neighbours.append([stamp(int(r)) for r in answer["row"]] + [blank] * (k - len(answer)))
            distances[i, :len(answer)] = answer["distance"]
        bands = data.bands
    return neighbour_gallery(np.stack(queries), np.array(neighbours), names, distances,
                             Path(out_png).with_suffix(""), "Most similar galaxies (distance above)", bands)
