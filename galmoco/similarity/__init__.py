"""Similarity search at survey scale: a faiss index of embeddings and the queries on it (``galmoco index``,
``galmoco search``).

- :mod:`galmoco.similarity.index`: :func:`build_index` (exact up to a size, IVF beyond, with its measured
  recall), :class:`Index`, :func:`neighbour_table` (the top-k table of every galaxy, resumable);
- :mod:`galmoco.similarity.query`: search by id, by RA/Dec, by vectors or by FITS cutouts.

This layer sits between :mod:`galmoco.embed` and :mod:`galmoco.analysis`; it imports neither torch
nor faiss until used, so ``import galmoco`` stays light (``galmoco[search]`` installs faiss).
"""

from galmoco.similarity.index import Index, build_index, import_faiss, neighbour_table
from galmoco.similarity.query import search, search_ids, search_radec, search_vectors

__all__ = ["Index", "build_index", "import_faiss", "neighbour_table", "search", "search_ids", "search_radec",
           "search_vectors"]
