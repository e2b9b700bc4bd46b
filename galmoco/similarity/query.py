"""Galaxies like this one: search an index (:mod:`galmoco.similarity.index`) by id, by sky position or by a
FITS cutout embedded on the fly, and draw the answers.

Every search returns one table: ``query`` (the query's id or label), ``rank`` (1 = most similar),
``row`` (the index row), the matched galaxy's ``id``, ``ra``, ``dec`` (degrees) and ``distance`` (the
index's metric). A query galaxy that is itself in the index is left out of its own answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from galmoco.errors import GalmocoError
from galmoco.similarity.index import Index

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["search", "search_ids", "search_radec", "search_vectors"]


def _open(index: Index | str | Path) -> Index:
    return index if isinstance(index, Index) else Index(index)


def _answer(index: Index, distances: np.ndarray, rows: np.ndarray, queries: Sequence[str],
            exclude: Sequence[int] | None, k: int) -> Table:
    """The result table; rows in ``exclude[i]`` (the query itself) are dropped and each answer cut to k."""
    from astropy.table import Table

    out: dict[str, list] = {"query": [], "rank": [], "row": [], "distance": []}
    for i, name in enumerate(queries):
        keep = [(r, d) for r, d in zip(rows[i], distances[i], strict=True)
                if r >= 0 and (exclude is None or r != exclude[i])][:k]
        for rank, (r, d) in enumerate(keep, start=1):
            out["query"].append(str(name))
            out["rank"].append(rank)
            out["row"].append(int(r))
            out["distance"].append(float(d))
    table = Table(out, dtype=(str, np.int32, np.int64, np.float32))
    for column in ("id", "ra", "dec"):
        if column in index.catalog.colnames:
            table[column] = np.asarray(index.catalog[column])[table["row"]]
    return table[[c for c in ("query", "rank", "id", "ra", "dec", "distance", "row") if c in table.colnames]]


def search_vectors(index: Index | str | Path, vectors: np.ndarray, k: int = 10,
                   queries: Sequence[str] | None = None) -> Table:
    """The ``k`` most similar indexed galaxies of each query vector ``(Q, D)`` (see the module docstring).

    Args:
        queries: a label per vector (default ``q0``, ``q1``...).
    """
    index = _open(index)
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    labels = list(queries) if queries is not None else [f"q{i}" for i in range(len(vectors))]
    distances, rows = index.search(vectors, k)
    return _answer(index, distances, rows, labels, None, k)


def search_ids(index: Index | str | Path, ids: Sequence[str], k: int = 10) -> Table:
    """The ``k`` most similar other galaxies of indexed galaxies given by ``id``.

    Raises:
        GalmocoError: naming the ids that are not in the index.
    """
    index = _open(index)
    lookup = {str(v): i for i, v in enumerate(index.catalog["id"])}
    missing = [str(i) for i in ids if str(i) not in lookup]
    if missing:
        raise GalmocoError(f"{index.path}: ids not in the index: {', '.join(missing[:10])}")
    rows = [lookup[str(i)] for i in ids]
    distances, found = index.search(np.stack([index.vector(r) for r in rows]), k + 1)
    return _answer(index, distances, found, [str(i) for i in ids], rows, k)


def search_radec(index: Index | str | Path, ra: float, dec: float, radius_arcsec: float = 2.0,
                 k: int = 10) -> Table:
    """The ``k`` most similar galaxies of the indexed galaxy nearest to (``ra``, ``dec``) in degrees.

    The nearest catalogue object is found with astropy's ``SkyCoord.match_to_catalog_sky``.

    Raises:
        GalmocoError: when the index has no positions or none lies within ``radius_arcsec``.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    index = _open(index)
    if not {"ra", "dec"} <= set(index.catalog.colnames):
        raise GalmocoError(f"{index.path}: the catalogue has no ra/dec columns")
    catalog = SkyCoord(np.asarray(index.catalog["ra"], float) * u.deg, np.asarray(index.catalog["dec"], float)
                       * u.deg)
    row, separation, _ = SkyCoord(ra * u.deg, dec * u.deg).match_to_catalog_sky(catalog)
    arcsec = float(np.squeeze(separation.arcsec))
    if not arcsec <= radius_arcsec:
        raise GalmocoError(f"no indexed galaxy within {radius_arcsec:g} arcsec of RA {ra:.6f}, Dec {dec:.6f} "
                           f"(nearest: {arcsec:.1f} arcsec)")
    return search_ids(index, [str(index.catalog["id"][int(np.squeeze(row))])], k)


def search(index: Index | str | Path, ids: Sequence[str] = (), radec: tuple[float, float] | None = None,
           radius_arcsec: float = 2.0, fits: Sequence[str | Path] = (), checkpoint: str | Path | None = None,
           k: int = 10, device: str = "auto") -> tuple[Table, np.ndarray | None]:
    """Search by any mix of ids, one position and FITS cutouts (answers stacked in that order).

    Args:
        index: the index folder (``galmoco index``) or an open :class:`~galmoco.similarity.index.Index`.
        ids: catalogue ids.
        radec: (RA, Dec) in degrees; matched within ``radius_arcsec``.
        fits: cutouts to embed with ``checkpoint`` (default: the checkpoint the embeddings came from).
        k: neighbours per query.
        device: where FITS cutouts are embedded.

    Returns:
        ``(table, query images)``: the images ``(Q_fits, B, H, W)`` of the FITS queries (for a
        gallery), None without any.
    """
    from astropy.table import vstack

    index = _open(index)
    parts, images = [], None
    if ids:
        parts.append(search_ids(index, ids, k))
    if radec is not None:
        parts.append(search_radec(index, radec[0], radec[1], radius_arcsec, k))
    if fits:
        from galmoco.distributed import resolve_device
        from galmoco.embed import encode_images, load_checkpoint_model, model_contract, read_cutouts

        source = checkpoint or index.catalog.meta.get("CKPT")
        if not source or source == "model":
            raise GalmocoError(f"{index.path}: the index does not record its checkpoint; pass --checkpoint")
        dev = resolve_device(device)
        model = load_checkpoint_model(source, dev)
        images, catalog = read_cutouts(list(fits), model_contract(model))
        vectors = encode_images(model, images, dev)[index.info.get("column", "latent")]
        parts.append(search_vectors(index, vectors, k, [str(i) for i in catalog["id"]]))
    if not parts:
        raise GalmocoError("nothing to search for: give ids, a position or FITS cutouts")
    return (parts[0] if len(parts) == 1 else vstack(parts)), images
