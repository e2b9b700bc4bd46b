"""A similarity-search index over latent vectors (faiss), with its measured recall, and the resumable
top-k neighbour table of every galaxy.

An index folder holds ``index.faiss``, ``catalog.parquet`` (the embeddings table's scalar columns, in
index row order) and ``info.json`` (kind, metric, sizes, the search setting and the recall measured at
build time). Below :data:`EXACT_LIMIT` vectors the index is exact (flat); above it is an inverted file
(IVF-Flat: k-means cells, Jegou, Douze & Schmid 2011; Johnson, Douze & Jegou 2019 for faiss) whose
``nprobe`` (cells searched per query) is raised until recall@10 against exact search, measured on a
sample of queries, reaches the target. The precomputed neighbour table follows the design of
Stein et al. (2022, "Mining for strong gravitational lenses with self-supervised learning"), whose
DECaLS similarity search serves precomputed neighbours so that a query is one small read.

Distances: ``l2`` is the Euclidean distance; ``cosine`` is ``1 - cos(angle)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from galmoco.errors import GalmocoError
from galmoco.files import atomic_output, atomic_write_text

if TYPE_CHECKING:
    from astropy.table import Table

# astropy, torch and faiss are imported where they are used: ``import galmoco`` exposes this module's
# names and must stay light (``galmoco --help`` does not import torch)

__all__ = ["EXACT_LIMIT", "Index", "build_index", "build_index_from_vectors", "import_faiss",
           "neighbour_table", "read_neighbour_table"]

#: up to this many vectors the index is exact (one query scans them in a few ms)
EXACT_LIMIT = 100_000
#: queries sampled to measure recall at build time
RECALL_QUERIES = 1000
METRICS = ("l2", "cosine")
KINDS = ("auto", "flat", "ivf")


def import_faiss() -> Any:
    """faiss, or a one-line error naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise GalmocoError("similarity search needs faiss: pip install 'galmoco[search]'") from None
    return faiss


def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32 C-contiguous; unit length for cosine (inner product = cosine)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return x


def _to_distance(raw: np.ndarray, metric: str) -> np.ndarray:
    """faiss scores (squared L2, or inner product of unit vectors) as distances."""
    if metric == "cosine":
        return (1.0 - raw).astype(np.float32)
    return np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1])


class Index:
    """An index folder opened for search.

    Attributes:
        path: the folder; info: ``info.json`` as a dict; catalog: the catalogue Table (index row order);
        faiss_index: the faiss index (``nprobe`` set as measured).

    Example:
        >>> import numpy as np, tempfile
        >>> from astropy.table import Table
        >>> rng = np.random.default_rng(0)
        >>> folder = build_index_from_vectors(rng.normal(size=(500, 8)), Table({"id": np.arange(500)}),
        ...                                   tempfile.mkdtemp() + "/idx")
        >>> index = Index(folder)
        >>> distances, rows = index.search(index.vector(3), k=2)
        >>> int(rows[0, 0]), float(distances[0, 0])
        (3, 0.0)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        info_path = self.path / "info.json"
        if not info_path.is_file():
            raise GalmocoError(f"{self.path}: not a galmoco index (no info.json)")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        faiss = import_faiss()
        self.faiss_index = faiss.read_index(str(self.path / "index.faiss"))
        if self.info["kind"] == "ivf":
            faiss.extract_index_ivf(self.faiss_index).nprobe = int(self.info["nprobe"])
        from galmoco.io.tables import read_table

        self.catalog = read_table(self.path / "catalog.parquet")
        self.metric: str = self.info["metric"]

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of index row ``row`` (unit length for cosine), shape ``(D,)``."""
        if not 0 <= int(row) < len(self):
            raise GalmocoError(f"{self.path}: row {row} out of range 0..{len(self) - 1}")
        if self.info["kind"] == "ivf":
            import_faiss().extract_index_ivf(self.faiss_index).make_direct_map()
        return self.faiss_index.reconstruct(int(row))

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed vectors of each query.

        Args:
            queries: ``(Q, D)`` or ``(D,)`` vectors (the embeddings' column, unnormalised).
            k: neighbours per query.

        Returns:
            ``(distances (Q, k) float32, rows (Q, k) int64)``, nearest first; rows are index rows
            (``catalog`` rows), -1 where fewer than ``k`` were found.
        """
        q = _prepare(np.atleast_2d(queries), self.metric)
        if q.shape[1] != self.info["dim"]:
            raise GalmocoError(f"{self.path}: queries have {q.shape[1]} dimensions, the index "
                               f"{self.info['dim']}")
        raw, rows = self.faiss_index.search(q, int(k))
        return _to_distance(raw, self.metric), rows


def _auto_kind(n: int, kind: str) -> str:
    if kind not in KINDS:
        raise GalmocoError(f"index kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    return ("flat" if n <= EXACT_LIMIT else "ivf") if kind == "auto" else kind


def build_index_from_vectors(vectors: np.ndarray, catalog: Table, out_dir: str | Path, metric: str = "l2",
                             kind: str = "auto", target_recall: float = 0.95, seed: int = 0,
                             sources: Sequence[str] = (), column: str = "latent") -> Path:
    """Build and write an index folder for ``(N, D)`` vectors and their catalogue (row i = vector i).

    Args:
        vectors: the latent vectors.
        catalog: one row per vector (``id``, ``ra``/``dec`` in degrees and any scalar columns).
        out_dir: the index folder (created; an existing index is replaced file by file, atomically).
        metric: ``"l2"`` or ``"cosine"``.
        kind: ``"flat"`` (exact), ``"ivf"`` (IVF-Flat) or ``"auto"`` (flat up to :data:`EXACT_LIMIT`).
        target_recall: for ``ivf``, the recall@10 against exact search that ``nprobe`` is raised to reach.
        seed: the k-means sample and the recall queries.
        sources: where the vectors came from (recorded in ``info.json``).
        column: the embeddings column the vectors are (recorded: FITS queries are embedded into it).

    Returns:
        ``out_dir``.
    """
    faiss = import_faiss()
    if metric not in METRICS:
        raise GalmocoError(f"metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    t0 = time.perf_counter()
    x = _prepare(vectors, metric)
    n, dim = x.shape
    if len(catalog) != n:
        raise GalmocoError(f"{len(catalog)} catalogue rows for {n} vectors")
    if n < 2:
        raise GalmocoError(f"an index needs at least 2 vectors, got {n}")
    kind = _auto_kind(n, kind)
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = {"kind": kind, "metric": metric, "n": n, "dim": dim, "column": column,
                            "sources": list(sources)}
    if kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
        index.add(x)
        info["recall_at_10"] = 1.0
    else:
        # about sqrt(N) cells: k-means training grows as nlist^2 (the build stays minutes at 10^6 on 2
        # cores) while a query scans nprobe * N / nlist vectors (~ms)
        nlist = int(2 ** round(math.log2(max(16.0, math.sqrt(n)))))
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        # 40 points per cell: faiss's lower bound for a stable k-means, and a bounded build time
        train = x[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
        index.train(train)
        for start in tqdm(range(0, n, 100_000), desc="index", unit="chunk", disable=None):
            index.add(x[start:start + 100_000])
        info.update(nlist=nlist, **_tune_nprobe(index, x, faiss_metric, target_recall, rng))
    info["build_seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    from galmoco.io.tables import write_table

    write_table(catalog, out / "catalog.parquet")
    atomic_write_text(out / "info.json", json.dumps(info, indent=2) + "\n")
    return out


def _tune_nprobe(index: Any, x: np.ndarray, faiss_metric: int, target: float,
                 rng: np.random.Generator, k: int = 10) -> dict[str, Any]:
    """The smallest power-of-two ``nprobe`` whose recall@k on sampled queries reaches ``target``."""
    import faiss

    queries = x[rng.choice(len(x), size=min(RECALL_QUERIES, len(x)), replace=False)]
    exact = faiss.IndexFlat(x.shape[1], faiss_metric)
    exact.add(x)
    _, truth = exact.search(queries, k)
    del exact
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        recall = _recall(index.search(queries, k)[1], truth)
        if recall >= target or nprobe >= index.nlist:
            break
        nprobe *= 2
    return {"nprobe": nprobe, "recall_at_10": round(recall, 4), "recall_queries": len(queries)}


def build_index(embeddings: str | Path | Sequence[str | Path], out_dir: str | Path, column: str = "latent",
                metric: str = "l2", kind: str = "auto", target_recall: float = 0.95, seed: int = 0) -> Path:
    """Build an index folder from embeddings tables (``galmoco embed`` output; several are concatenated).

    Args:
        embeddings: one or more tables (or sharded-embed manifests).
        out_dir: the index folder.
        column: the vector column to index (``latent``, ``projection``...).
        metric, kind, target_recall, seed: see :func:`build_index_from_vectors`.

    Returns:
        ``out_dir``.
    """
    from astropy.table import Table, vstack

    from galmoco.embed import read_embeddings

    paths = [embeddings] if isinstance(embeddings, str | Path) else list(embeddings)
    tables = []
    for path in paths:
        table = read_embeddings(path)
        if column not in table.colnames or table[column].ndim != 2:
            raise GalmocoError(f"{path}: no vector column {column!r} (columns: {', '.join(table.colnames)})")
        tables.append(table)
    table = vstack(tables, join_type="inner", metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    scalar = [c for c in table.colnames if table[c].ndim == 1]
    catalog = Table({c: table[c] for c in scalar})
    stores = [s for t in tables for s in str(t.meta.get("STORE", "")).split(",") if s]
    catalog.meta.update(STORE=",".join(stores), CKPT=str(tables[0].meta.get("CKPT", "")))
    return build_index_from_vectors(np.asarray(table[column]), catalog, out_dir, metric, kind, target_recall,
                                    seed, sources=[str(p) for p in paths], column=column)


def neighbour_table(index_dir: str | Path, k: int = 10, chunk: int = 10_000) -> Path:
    """The ``k`` nearest other galaxies of every indexed galaxy, written in chunks; resumable.

    Each chunk of ``chunk`` rows is written atomically to ``neighbours/part-<first row>.npz`` (arrays
    ``rows`` (n, k) int64 and ``distances`` (n, k) float32); a rerun after a kill skips the chunks on
    disk, and ``neighbours/done.json`` marks completion. Read it with :func:`read_neighbour_table`.

    Returns:
        The ``neighbours`` folder.
    """
    index = Index(index_dir)
    folder = index.path / "neighbours"
    folder.mkdir(exist_ok=True)
    settings = {"k": int(k), "chunk": int(chunk), "n": len(index)}
    marker = folder / "settings.json"
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        raise GalmocoError(f"{folder}: holds a table with {marker.read_text().strip()}; delete it or use "
                           "the same k and chunk")
    atomic_write_text(marker, json.dumps(settings) + "\n")
    vectors_of = _row_vectors(index)
    starts = [s for s in range(0, len(index), chunk) if not (folder / f"part-{s:012d}.npz").is_file()]
    for start in tqdm(starts, desc="neighbours", unit="chunk", disable=None):
        rows = np.arange(start, min(len(index), start + chunk))
        distances, found = index.search(vectors_of(rows), k + 1)
        own = found == rows[:, None]
        # drop the galaxy itself; an approximate search that missed it drops its farthest instead
        keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1) < k)
        shape = (len(rows), k)
        with atomic_output(folder / f"part-{start:012d}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rows=found[keep].reshape(shape), distances=distances[keep].reshape(shape))
    atomic_write_text(folder / "done.json", json.dumps(settings) + "\n")
    return folder


def _row_vectors(index: Index):
    """A function from a contiguous run of index rows to their stored vectors."""
    if index.info["kind"] == "ivf":
        import_faiss().extract_index_ivf(index.faiss_index).make_direct_map()
    return lambda rows: index.faiss_index.reconstruct_n(int(rows[0]), len(rows))


def read_neighbour_table(index_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(rows (N, k) int64, distances (N, k) float32)`` of a finished :func:`neighbour_table`."""
    folder = Path(index_dir) / "neighbours"
    if not (folder / "done.json").is_file():
        raise GalmocoError(f"{folder}: no finished neighbour table (run galmoco index --neighbours K)")
    parts = [np.load(p) for p in sorted(folder.glob("part-*.npz"))]
    return np.concatenate([p["rows"] for p in parts]), np.concatenate([p["distances"] for p in parts])
