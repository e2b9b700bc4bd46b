"""Exact nearest neighbours in latent space (chunked brute force over all objects)."""

from __future__ import annotations

import numpy as np
import torch

from galmoco.analysis.placement import pairwise_distances
from galmoco.errors import GalmocoError

__all__ = ["nearest_neighbours", "pick_queries"]


def nearest_neighbours(
    latent: np.ndarray, queries: np.ndarray, k: int = 8, metric: str = "l1", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other objects of each query row.

    Args:
        latent: ``(N, D)`` latent vectors of all objects.
        queries: ``(Q,)`` row indices into ``latent``.
        k: neighbours per query (the query itself is excluded).
        metric: ``"l1"``, ``"l2"`` or ``"cosine"``.
        chunk: queries per block (memory ``chunk x N x 4`` bytes).

    Returns:
        ``(indices (Q, k) int64, distances (Q, k) float32)``, nearest first.
    """
    x = torch.as_tensor(np.ascontiguousarray(latent, dtype=np.float32))
    queries = np.asarray(queries, dtype=np.int64)
    if not 1 <= k < len(x):
        raise GalmocoError(f"k={k} neighbours need 1 <= k < N={len(x)} objects")
    idx_out, dist_out = [], []
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[start:start + chunk])
            d = pairwise_distances(x[q], x, metric)
            d[torch.arange(len(q)), q] = torch.inf  # not its own neighbour
            dist, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
            idx_out.append(idx.numpy())
            dist_out.append(dist.numpy())
    return np.concatenate(idx_out), np.concatenate(dist_out)


def pick_queries(n: int, count: int = 6, seed: int = 0, ids: np.ndarray | None = None,
                 chosen: list[str] | None = None) -> np.ndarray:
    """Rows for a neighbour gallery: the ``chosen`` ids, else ``count`` random rows (sorted).

    Raises:
        GalmocoError: when a chosen id is not among ``ids``.
    """
    if chosen:
        lookup = {str(v): i for i, v in enumerate(ids if ids is not None else [])}
        missing = [c for c in chosen if c not in lookup]
        if missing:
            raise GalmocoError(f"ids not in the embeddings table: {', '.join(missing)}")
        return np.array([lookup[c] for c in chosen], dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(count, n), replace=False))
