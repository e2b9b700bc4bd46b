"""galmoco.similarity.index: exact and IVF indexes with measured recall; the neighbour table is exact for a
flat index and survives SIGKILL (a rerun keeps the chunks on disk and finishes)."""

from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.table import Table

import galmoco.similarity.index as index_module
from galmoco.embed import embed_store, read_embeddings
from galmoco.errors import GalmocoError
from galmoco.similarity.index import (
    Index,
    build_index,
    build_index_from_vectors,
    neighbour_table,
    read_neighbour_table,
)


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim)) * 3
    return (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def brute(x: np.ndarray, rows: np.ndarray, k: int, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows by numpy (float64)."""
    y = x.astype(np.float64)
    if metric == "cosine":
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        d = 1 - y[rows] @ y.T
    else:
        d = np.sqrt(((y[rows, None, :] - y[None, :, :]) ** 2).sum(-1))
    d[np.arange(len(rows)), rows] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_index_from_embeddings_is_exact(tmp_path, store_path, model, metric):
    emb = embed_store(model, store_path, tmp_path / "e.parquet", device="cpu")
    folder = build_index(emb, tmp_path / "idx", metric=metric)
    info = json.loads((folder / "info.json").read_text())
    assert (info["kind"], info["n"], info["dim"], info["recall_at_10"]) == ("flat", 48, 8, 1.0)
    index = Index(folder)
    assert list(index.catalog["id"][:2]) == ["obj000", "obj001"] and "latent" not in index.catalog.colnames
    x = np.asarray(read_embeddings(emb)["latent"])
    neighbour_table(folder, k=5, chunk=7)  # 7 does not divide 48
    rows, dist = read_neighbour_table(folder)
    want_rows, want_dist = brute(x, np.arange(48), 5, metric)
    # exact: the rows found are the k nearest; where two lie at the same distance (to float32
    # precision), either order is exact
    distance_of_found = brute(x, np.arange(48), 48, metric)
    true_dist = np.take_along_axis(distance_of_found[1], np.argsort(distance_of_found[0], axis=1), 1)
    np.testing.assert_allclose(np.take_along_axis(true_dist, rows, 1), want_dist, rtol=1e-5, atol=1e-6)
    assert np.mean(rows == want_rows) > 0.95  # and nearly always in the same order
    np.testing.assert_allclose(dist, want_dist, rtol=1e-4, atol=1e-5)


def test_ivf_recall_is_measured_and_reached(tmp_path):
    x = clustered(6000)
    folder = build_index_from_vectors(x, Table({"id": np.arange(6000)}), tmp_path / "ivf", kind="ivf",
                                      target_recall=0.9)
    info = json.loads((folder / "info.json").read_text())
    assert info["kind"] == "ivf" and info["recall_at_10"] >= 0.9 and 1 <= info["nprobe"] <= info["nlist"]
    index = Index(folder)
    queries = np.arange(0, 6000, 60)
    _, found = index.search(x[queries], 11)
    truth, _ = brute(x, queries, 10)
    hits = np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]) / 10
    assert hits >= 0.85  # held-out estimate near the build-time one
    np.testing.assert_array_equal(index.vector(5), x[5])


def test_bad_inputs(tmp_path, store_path, model):
    emb = embed_store(model, store_path, tmp_path / "e.parquet", device="cpu")
    with pytest.raises(GalmocoError, match="no vector column 'projection'"):
        build_index(emb, tmp_path / "i", column="projection")
    with pytest.raises(GalmocoError, match="metric 'l3' is unknown"):
        build_index(emb, tmp_path / "i", metric="l3")
    with pytest.raises(GalmocoError, match="not a galmoco index"):
        Index(tmp_path)
    folder = build_index(emb, tmp_path / "i")
    neighbour_table(folder, k=3)
    with pytest.raises(GalmocoError, match="delete it or use the same k and chunk"):
        neighbour_table(folder, k=4)


_CHILD = ("import sys; from galmoco.similarity.index import neighbour_table; "
          "neighbour_table(sys.argv[1], 10, 50)")


@pytest.fixture
def one_faiss_thread():
    """One OpenMP thread: on a shared 2-core machine spinning faiss threads make small searches slower."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def test_neighbour_table_resumes_after_sigkill(tmp_path, one_faiss_thread):
    n = 8_000
    x = clustered(n, dim=32, seed=1)
    folder = build_index_from_vectors(x, Table({"id": np.arange(n)}), tmp_path / "idx", kind="flat")
    parts = folder / "neighbours"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.npz"))) < 3 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.npz")}
    assert 3 <= len(kept) < n // 50 and not (parts / "done.json").exists()
    neighbour_table(folder, 10, 50)
    assert all((parts / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())  # not redone
    rows, _ = read_neighbour_table(folder)
    assert rows.shape == (n, 10)
    sample = np.arange(0, n, 397)
    np.testing.assert_array_equal(rows[sample], brute(x, sample, 10)[0])


def test_docstring_examples_run():
    result = doctest.testmod(index_module)
    assert result.attempted >= 5 and result.failed == 0
