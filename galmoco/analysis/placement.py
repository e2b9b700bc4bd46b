"""Similarity placement: the exact rank of each transformed copy of a galaxy among all originals.

For originals ``X`` (N, D) and transformed copies ``Y`` (N, D) (``y_i`` is galaxy ``i`` flipped or
rotated, then encoded), the placement rank of copy ``i`` is

    rank_i = 1 + #{j : d(y_i, x_j) < d(y_i, x_i)} + #{j != i : d(y_i, x_j) == d(y_i, x_i)}

so rank 1 means the copy's nearest original is its own, and ties count against the copy. This is the
measure of the DES MoCo-autoencoder study (which built the full N x N L1 matrix with scikit-learn);
here the queries are processed in chunks, so memory is O(N x chunk) and the count is exact.

Exactness: a float32 pass (one matmul per chunk for L2/cosine, faiss's SIMD L1 kernel for L1) decides
every pair whose distance differs from the true pair's by more than a rounding-error bound; only rows
that have pairs inside the bound are scanned for them, and those pairs (and the true pair itself) are
recomputed directly in float64 from the definition. For cosine, normalising each vector would round
two vectors of one direction apart, so such pairs are compared without normalising:
``s(y, x_j) >= s(y, x_i)`` iff ``(y.x_j)|y.x_j| |x_i|^2 >= (y.x_i)|y.x_i| |x_j|^2``, in float64 with a
rounding-error bound, and in exact rational arithmetic for the pairs inside that bound (exact ties,
which bf16 or rounded latents produce, count against the copy as the rank's definition says).
faiss's k-nearest search is not used (a rank is a count over the whole row), but its brute-force L1
kernel (``faiss.pairwise_distances``, OpenMP) is several times faster than ``torch.cdist(p=1)``. For
cosine, a half-dimension Cauchy-Schwarz bound (:class:`_CosineScreen`) first proves rank 1 for most
copies, and only the rest get the full pass.

Memory: each chunk's ``(chunk, N)`` float32 tile is kept near :data:`TILE_BYTES`, plus one reused
boolean mask a quarter of its size, so the working set is bounded whatever N is.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from astropy.table import Table
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from galmoco.data.transforms import PLACEMENT_TRANSFORMS
from galmoco.errors import GalmocoError

__all__ = [
    "METRICS",
    "TILE_BYTES",
    "exact_distances",
    "pairwise_distances",
    "placement_ranks",
    "placement_summary",
    "placement_table",
]

METRICS: tuple[str, ...] = ("l1", "l2", "cosine")
#: target size of one chunk's float32 distance tile (bytes); the working set is about 1.25x this
TILE_BYTES = 64 << 20
#: float32 unit roundoff; the rounding-error bound of a float32 D-term sum is about D * _U
_U = 2.0**-24
#: pairs rechecked in float64 per block (bounds the recheck's memory to ~ this x D x 8 bytes x 2)
_RECHECK_BLOCK = 1 << 16


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise GalmocoError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero: its cosine similarity is 0 to everything)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


def _as_array(a: np.ndarray | torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    """A C-contiguous numpy array (a view where possible) of an array or CPU/GPU tensor."""
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=dtype)


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(M, N)`` float32 L1 distances by faiss's SIMD kernel (OpenMP threads: ``faiss.omp_set_num_threads``).

    Every entry is a float32 sum of ``D`` float32 terms ``|a_d - b_d|``, so its error is at most about
    ``D * 2**-24`` times the distance, whatever order the kernel sums in.
    """
    import faiss  # heavy import, needed only for L1

    return faiss.pairwise_distances(_as_array(a), _as_array(b), faiss.METRIC_L1)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances between every row of ``a`` and every row of ``b`` (the fast float32 path).

    Args:
        a: ``(M, D)`` queries.
        b: ``(N, D)`` references.
        metric: ``"l1"`` (sum of absolute differences), ``"l2"`` (Euclidean) or ``"cosine"``
            (1 - cosine similarity).

    Returns:
        ``(M, N)`` tensor (float32 CPU for L1, else ``a``'s dtype and device). L2 uses the matmul
        expansion, so it carries rounding error of order ``D * eps * (|a|^2 + |b|^2)``; use
        :func:`exact_distances` where that matters.
    """
    _check_metric(metric)
    if metric == "l1":
        return torch.from_numpy(_l1(_as_array(a), _as_array(b)))
    if metric == "cosine":
        tiny = torch.finfo(a.dtype).tiny
        return 1.0 - F.normalize(a, dim=1, eps=tiny) @ F.normalize(b, dim=1, eps=tiny).T
    sq = torch.addmm((b * b).sum(1)[None, :], a, b.T, beta=1.0, alpha=-2.0).add_((a * a).sum(1)[:, None])
    return sq.clamp_min_(0.0).sqrt_()


def exact_distances(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, metric: str) -> np.ndarray:
    """Row-wise distances ``d(a[k], b[k])`` in float64 straight from the definition.

    Args:
        a, b: ``(K, D)`` paired rows (any float dtype).
        metric: one of :data:`METRICS`.

    Returns:
        ``(K,)`` float64. L2 is returned squared (same order, no square-root rounding).
    """
    a, b = _as_array(a, np.float64), _as_array(b, np.float64)
    if metric == "l1":
        return np.abs(a - b).sum(1)
    if metric == "l2":
        return ((a - b) ** 2).sum(1)
    return 1.0 - (_unit(a) * _unit(b)).sum(1)


def _chunk_scores(
    y: np.ndarray, ref: np.ndarray, x_sq: np.ndarray, idx: np.ndarray, metric: str, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float32 scores that order each row like ``d(y_i, x_j)``, the true pair's score and its error bound.

    Cosine scores are ``-s_ij`` (the query is negated before the matmul, so the tile needs no extra
    pass); L2 scores are ``|x_j|^2 - 2 y_i.x_j`` (the squared distance less ``|y_i|^2``, constant
    along a row). The true-pair score is read from the same tile, so a competitor computed bitwise
    identically compares equal. The matmul writes into the reused buffer ``out`` (no fresh tile
    allocation and page faults per chunk).

    Args:
        y: ``(M, D)`` float32 queries.
        ref: for L2/cosine the ``(D, N)`` transposed references (unit rows for cosine); for L1 the
            ``(N, D)`` references.
        x_sq: ``(N,)`` squared reference norms.
        idx: ``(M,)`` index of each query's own original.
        metric: one of :data:`METRICS`.
        out: ``(M, N)`` float32 buffer.

    Returns:
        ``(scores (M, N) float32, true (M,) float64, tol (M,) float64)``.
    """
    m, d = y.shape
    if metric == "cosine":
        t = np.matmul(-_unit(y), ref, out=out)
        tol = np.full(m, (2 * d + 8) * _U)
    elif metric == "l2":
        t = np.matmul(y * np.float32(-2.0), ref, out=out)
        t += x_sq
        tol = (4 * d + 16) * _U * (np.einsum("ij,ij->i", y, y, dtype=np.float64) + float(x_sq.max()))
    else:
        t = _l1(y, ref)
        tol = None
    rows = np.arange(m)
    true = t[rows, idx].astype(np.float64)
    if tol is None:  # the L1 sum's rounding error scales with the distance itself
        tol = (2 * d + 8) * _U * true
    return t, true, tol


def _band(true: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds ``lo <= true - tol`` and ``hi >= true + tol``, rounded outwards (so the float32
    tile is compared without a float64 upcast and no pair inside the bound is lost)."""
    lo = np.nextafter((true - tol).astype(np.float32), np.float32(-np.inf))
    hi = np.nextafter((true + tol).astype(np.float32), np.float32(np.inf))
    return lo, hi


def _exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    """``a.b`` in exact rational arithmetic (every float is a rational number)."""
    return sum((Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b, strict=True)), Fraction(0))


def cosine_at_least(y: np.ndarray, xc: np.ndarray, xt: np.ndarray) -> np.ndarray:
    """Row-wise ``cos(y, xc) >= cos(y, xt)``, decided exactly (a zero vector has cosine 0 to everything).

    With ``p = y.xc``, ``q = y.xt``: ``p / |xc| >= q / |xt|`` iff ``p|p| |xt|^2 >= q|q| |xc|^2``. The
    products of float32 inputs are exact in float64, so the float64 sides are off by at most about
    ``(3D + 10) 2^-53 (P^2 |xt|^2 + Q^2 |xc|^2)`` (``P``, ``Q``: the sums of absolute products); pairs
    closer than twice that are decided in exact rational arithmetic.

    Args:
        y, xc, xt: ``(K, D)`` float arrays: copies, competitors and their own originals.

    Returns:
        ``(K,)`` bool.
    """
    y, xc, xt = (_as_array(a, np.float64) for a in (y, xc, xt))
    p, q = np.einsum("ij,ij->i", y, xc), np.einsum("ij,ij->i", y, xt)
    p_abs, q_abs = np.einsum("ij,ij->i", np.abs(y), np.abs(xc)), np.einsum("ij,ij->i", np.abs(y), np.abs(xt))
    nc, nt = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", xt, xt)
    lhs, rhs = p * np.abs(p) * np.where(nt > 0, nt, 1.0), q * np.abs(q) * np.where(nc > 0, nc, 1.0)
    lhs[nc == 0], rhs[nt == 0] = 0.0, 0.0  # a zero vector: cosine 0
    bound = 2 * (3 * y.shape[1] + 10) * 2.0**-53 * (p_abs**2 * nt + q_abs**2 * nc)
    result = lhs >= rhs
    for k in np.flatnonzero(np.abs(lhs - rhs) <= bound):
        pe, qe = _exact_dot(y[k], xc[k]), _exact_dot(y[k], xt[k])
        nce, nte = _exact_dot(xc[k], xc[k]), _exact_dot(xt[k], xt[k])
        left = pe * abs(pe) * nte if nce else Fraction(0)
        right = qe * abs(qe) * nce if nte else Fraction(0)
        result[k] = left >= right
    return result


def _recheck(
    t: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows_sel: np.ndarray, y: np.ndarray, x: np.ndarray,
    idx: np.ndarray, metric: str,
) -> np.ndarray:
    """Per-row count of originals scored in ``[lo, hi]`` that are, in float64, no farther than the true one.

    Only the rows ``rows_sel`` of the tile are scanned (those whose band holds more than the true pair).
    Returns ``(M,)`` int64 counts (zero outside ``rows_sel``).
    """
    m = t.shape[0]
    sub = t[rows_sel]
    r, cols = ((sub >= lo[rows_sel, None]) & (sub <= hi[rows_sel, None])).nonzero()
    rows = rows_sel[r]
    keep = cols != idx[rows]  # the true pair is the reference, not a competitor
    rows, cols = rows[keep], cols[keep]
    hits = np.zeros(m, dtype=np.int64)
    true = None if metric == "cosine" else exact_distances(y, x[idx], metric)
    for b in range(0, rows.size, _RECHECK_BLOCK):
        r, c = rows[b : b + _RECHECK_BLOCK], cols[b : b + _RECHECK_BLOCK]
        if true is None:
            against = cosine_at_least(y[r], x[c], x[idx[r]])
        else:
            against = exact_distances(y[r], x[c], metric) <= true[r]
        hits += np.bincount(r[against], minlength=m)
    return hits


class _CosineScreen:
    """A cheap upper bound on cosine similarity that proves most copies rank 1 at a fraction of the cost.

    Rotate the unit vectors onto the originals' principal axes (float64 eigenvectors), keep the first
    ``k = D // 2`` coordinates and append the norm of the rest: by Cauchy-Schwarz
    ``s_ij <= p_i[:k].q_j[:k] + |p_i[k:]| |q_j[k:]|``, a ``(k + 1)``-term matmul. An original whose bound
    falls below the copy's own similarity (less every rounding margin) cannot be closer or tied, so a
    row where only the true pair survives has rank 1 without the full ``D``-term pass. Real latents
    concentrate their variance in the leading axes, which makes the bound tight; on isotropic data it
    still halves the work for well-placed copies.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.xu = _unit(x)  # the float32 unit vectors of the full pass
        xu = self.xu.astype(np.float64)
        # one BLAS thread for this small Gram + eigh: multithreaded OpenBLAS can take 100x longer on a
        # 128 x 128 problem when the cores are shared (thread hand-off); the big tile matmuls are fine
        with threadpool_limits(1, user_api="blas"):
            _, vecs = np.linalg.eigh(xu.T @ xu)
        self.rot = vecs[:, ::-1]  # descending variance
        self.k = x.shape[1] // 2
        self.ref = np.ascontiguousarray(self._project(xu).T)
        # the full pass's tolerance (2D + 8)u, its two D-term float32 dot products (2D + 4)u, the
        # rotation's float32 rounding and the (k + 1)-term float32 bound matmul (2k + 8)u, doubled: a
        # generous margin costs only screening power
        self.margin = 2 * (4 * x.shape[1] + 2 * self.k + 32) * _U

    def _project(self, u: np.ndarray) -> np.ndarray:
        """``(M, k + 1)`` float32: leading rotated coordinates, then the rest's norm rounded up."""
        p = u @ self.rot
        rest = np.nextafter(np.linalg.norm(p[:, self.k :], axis=1).astype(np.float32), np.float32(np.inf))
        return np.concatenate([p[:, : self.k].astype(np.float32), rest[:, None]], axis=1)

    def unresolved(self, y: np.ndarray, idx: np.ndarray, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Boolean ``(M,)``: True where some other original's bound reaches the copy's similarity.

        Args:
            y: ``(M, D)`` float32 copies; idx: their originals' indices; out, mask: ``(M, N)`` buffers.
        """
        yu = _unit(y).astype(np.float64)  # the same float32 unit vectors the full pass uses
        own = np.einsum("ij,ij->i", yu, self.xu[idx].astype(np.float64))
        thr = np.nextafter((own - self.margin).astype(np.float32), np.float32(-np.inf))
        bound = np.matmul(self._project(yu), self.ref, out=out)
        return np.count_nonzero(np.greater_equal(bound, thr[:, None], out=mask), axis=1) > 1


def placement_ranks(
    originals: np.ndarray | torch.Tensor,
    copies: np.ndarray | torch.Tensor,
    metric: str = "l1",
    chunk: int | None = None,
    owners: np.ndarray | None = None,
) -> np.ndarray:
    """Exact placement rank of every copy among all originals (1 = its own original is nearest).

    Pure numpy (BLAS threads for the matmul, faiss's OpenMP threads for L1): no torch op runs in the
    loop, so torch's spinning OpenMP workers never compete with the BLAS threads for the cores.

    Args:
        originals: ``(N, D)`` latent vectors of the original stamps.
        copies: ``(M, D)`` latent vectors of the transformed (or re-observed) stamps; row ``i`` is a copy
            of original ``owners[i]`` (default: of original ``i``, with ``M == N``).
        metric: ``"l1"``, ``"l2"`` or ``"cosine"``.
        chunk: queries per block (working memory ~ ``1.25 x chunk x N x 4`` bytes); default keeps one
            block's float32 tile near :data:`TILE_BYTES`.
        owners: optional ``(M,)`` row of each copy's own original.

    Returns:
        ``(M,)`` int64 ranks in ``1..N``; ties with other originals count against the copy.
    """
    _check_metric(metric)
    x, y = _as_array(originals), _as_array(copies)
    if owners is None and x.shape != y.shape or x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise GalmocoError(f"originals {tuple(x.shape)} and copies {tuple(y.shape)} must both be (N, D)")
    n = x.shape[0]
    owners = np.arange(n) if owners is None else np.asarray(owners, np.int64)
    if owners.shape != (y.shape[0],) or (owners.size and (owners.min() < 0 or owners.max() >= n)):
        raise GalmocoError(f"owners must be ({y.shape[0]},) rows of the {n} originals")
    chunk = max(1, min(n, chunk or TILE_BYTES // (4 * max(n, 1))))
    ref = x if metric == "l1" else np.ascontiguousarray((_unit(x) if metric == "cosine" else x).T)
    x_sq = np.einsum("ij,ij->i", x, x)
    screen = _CosineScreen(x) if metric == "cosine" else None
    tile = np.empty((chunk, n), np.float32)
    mask = np.empty((chunk, n), bool)
    m_all = y.shape[0]
    ranks = np.ones(m_all, dtype=np.int64)
    for start in tqdm(range(0, m_all, chunk), desc=f"placement {metric}", unit="chunk", disable=None,
                      leave=False):
        rows = np.arange(start, min(m_all, start + chunk))
        if screen is not None:  # rows whose bound proves rank 1 keep it; the rest get the full pass
            m = rows.size
            rows = rows[screen.unresolved(y[rows], owners[rows], out=tile[:m], mask=mask[:m])]
        if rows.size == 0:
            continue
        m = rows.size
        idx = owners[rows]
        yc = y[rows]
        t, true_t, tol = _chunk_scores(yc, ref, x_sq, idx, metric, tile[:m])
        # two comparison passes: strictly closer beyond the bound, and within the bound (a band that
        # always holds the true pair itself); only rows with more than it need a float64 recheck
        lo, hi = _band(true_t, tol)
        closer = np.count_nonzero(np.less(t, lo[:, None], out=mask[:m]), axis=1)
        band = np.count_nonzero(np.less_equal(t, hi[:, None], out=mask[:m]), axis=1) - closer
        rows_sel = np.flatnonzero(band > 1)
        if rows_sel.size:
            closer = closer + _recheck(t, lo, hi, rows_sel, yc, x, idx, metric)
        ranks[rows] = closer + 1
    return ranks


def _transform_columns(table: Table, transforms: Sequence[str] | None) -> list[str]:
    if transforms is None:
        names = [t for t in PLACEMENT_TRANSFORMS if f"latent_{t}" in table.colnames]
    else:
        names = list(transforms)
    if not names:
        raise GalmocoError(
            "the embeddings table has no latent_<transform> columns; re-run `galmoco embed --transforms`"
        )
    for t in names:
        if f"latent_{t}" not in table.colnames:
            raise GalmocoError(f"the embeddings table has no column latent_{t} (transform {t!r})")
    return names


def placement_table(
    embeddings: Table,
    metric: str = "l1",
    transforms: Sequence[str] | None = None,
    exclude: np.ndarray | None = None,
    chunk: int | None = None,
) -> Table:
    """Placement ranks of every transform present in an embeddings table.

    Args:
        embeddings: table with ``id``, ``latent`` (N, D) and ``latent_<transform>`` columns.
        metric: ``"l1"``, ``"l2"`` or ``"cosine"``.
        transforms: names to rank (default: every ``latent_<name>`` column of :data:`PLACEMENT_TRANSFORMS`).
        exclude: optional ``(N,)`` bool, True for rows to leave out entirely (neither ranked nor a
            competitor), e.g. empty-sky stamps that have nothing to recognise.
        chunk: see :func:`placement_ranks`.

    Returns:
        Table with ``id`` and one int64 rank column per transform, one row per used object; meta
        ``metric``, ``n_excluded``.
    """
    names = _transform_columns(embeddings, transforms)
    keep = np.ones(len(embeddings), bool) if exclude is None else ~np.asarray(exclude, bool)
    if not keep.any():
        raise GalmocoError("every row is excluded; nothing to rank")
    out = Table({"id": np.asarray(embeddings["id"]).astype(str)[keep]})
    originals = np.asarray(embeddings["latent"])[keep]
    for t in names:
        out[t] = placement_ranks(originals, np.asarray(embeddings[f"latent_{t}"])[keep], metric, chunk)
    out.meta.update(metric=metric, n_excluded=int((~keep).sum()))
    return out


def placement_summary(ranks: Table) -> Table:
    """One row per transform: how often the copy places first, and the worst cases.

    Args:
        ranks: output of :func:`placement_table`.

    Returns:
        Table with ``transform``, ``metric``, ``n`` (objects ranked), ``n_excluded``, ``frac_rank1``,
        ``frac_rank_le5``, ``median``, ``p95`` (ranks) and ``worst10_ids`` (comma-separated ids of the
        ten highest ranks, worst first).
    """
    rows = []
    ids = np.asarray(ranks["id"]).astype(str)
    for t in [c for c in ranks.colnames if c != "id"]:
        r = np.asarray(ranks[t])
        worst = np.argsort(-r, kind="stable")[:10]
        rows.append((
            t, ranks.meta.get("metric", ""), len(r), int(ranks.meta.get("n_excluded", 0)),
            float(np.mean(r == 1)), float(np.mean(r <= 5)), float(np.median(r)),
            float(np.percentile(r, 95)), ",".join(ids[worst]),
        ))
    names = ("transform", "metric", "n", "n_excluded", "frac_rank1", "frac_rank_le5", "median", "p95",
             "worst10_ids")
    return Table(rows=rows, names=names) if rows else Table(names=names)
