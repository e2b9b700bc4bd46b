"""Similarity search at survey scale: ``galmoco.similarity.index`` on clustered synthetic vectors.

N = 1,000,000 (``--quick``: 100,000) 128-d vectors drawn around 2,000 cluster centres with spreads
from 0.3 to 1.0 of the centres' own scatter (clustered, not uniform, like galaxy embeddings), and
1,000 held-out query vectors drawn the same way. Measured, with the targets of issue 13:

1. index build (IVF-Flat, nprobe tuned to recall@10 >= 0.95 on sampled stored vectors): wall time
   (< 5 min on 2 cores) and the process's peak RSS, vectors included (< 4 GB);
2. recall@10 of the held-out queries against exact (flat) search (>= 0.95);
3. single-query latency, one query at a time, p50 (< 10 ms) and p99 (< 50 ms);
4. the top-10 neighbour table of all N (< 30 min), run in a child process that is SIGKILLed after
   ``--kill-after`` seconds and then resumed: the chunks written before the kill are kept (counted).

Run: ``python benchmarks/bench_search.py [--quick] [--threads 2] [--kill-after 60]``. Prints a
Markdown snippet.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.similarity.index import Index, build_index_from_vectors


def clustered(n: int, dim: int, seed: int, n_clusters: int = 2000) -> np.ndarray:
    """``n`` vectors around ``n_clusters`` fixed centres (seed 0), each cluster with its own spread."""
    centres_rng = np.random.default_rng(0)
    centres = centres_rng.normal(size=(n_clusters, dim)).astype(np.float32)
    spread = centres_rng.uniform(0.3, 1.0, n_clusters).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        label = rng.integers(0, n_clusters, stop - start)
        out[start:stop] = centres[label] + spread[label, None] * rng.standard_normal((stop - start, dim),
                                                                                   dtype=np.float32)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def table_child(folder: str) -> None:
    from galmoco.similarity.index import neighbour_table

    neighbour_table(folder, k=10, chunk=20_000)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=60.0)
    parser.add_argument("--work", default=None, help="folder for the index (default: a temporary one)")
    parser.add_argument("--table-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.table_child:
        table_child(args.table_child)
        return 0
    n, dim = (100_000 if args.quick else 1_000_000), 128
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_search_"))
    x = clustered(n, dim, seed=1)
    queries = clustered(1000, dim, seed=2)

    t0 = time.perf_counter()
    folder = build_index_from_vectors(x, Table({"row": np.arange(n)}), work / "index", kind="ivf")
    build_s = time.perf_counter() - t0
    build_rss = peak_rss_mb()
    info = json.loads((folder / "info.json").read_text())

    index = Index(folder)
    exact = faiss.IndexFlatL2(dim)
    exact.add(x)
    _, truth = exact.search(queries, 10)
    del exact
    _, found = index.search(queries, 10)
    recall = float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True)]) / 10)
    latency = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, 10)
        latency.append(time.perf_counter() - t)
    p50, p99 = (float(np.percentile(latency, p)) * 1e3 for p in (50, 99))

    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--table-child", str(folder)]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        child.wait(timeout=args.kill_after)
        killed = False
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed = True
    kept = len(list((folder / "neighbours").glob("part-*.npz")))
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    table_s = time.perf_counter() - t0
    total_parts = len(list((folder / "neighbours").glob("part-*.npz")))
    done = (folder / "neighbours" / "done.json").is_file()

    print(f"<!-- bench_search: {datetime.date.today()} {platform.platform()} "
          f"Python {platform.python_version()} "
          f"faiss {faiss.__version__}, {os.cpu_count()} cores, threads {args.threads}; command: "
          f"python benchmarks/bench_search.py {' '.join(sys.argv[1:])} -->")
    print(f"| N = {n:,}, D = {dim}, IVF-Flat nlist {info['nlist']}, nprobe {info['nprobe']} | |")
    print("|---|---|")
    print(f"| build (train + add + nprobe tuning) | {build_s:.0f} s, peak RSS {build_rss:,.0f} MB "
          f"(vectors {x.nbytes / 2**20:,.0f} MB) |")
    print(f"| recall@10, 1,000 held-out queries vs exact | {recall:.3f} (build-time estimate "
          f"{info['recall_at_10']}) |")
    print(f"| single-query latency | p50 {p50:.2f} ms, p99 {p99:.2f} ms |")
    print(f"| top-10 table of all {n:,} | {table_s / 60:.1f} min wall including a SIGKILL after "
          f"{args.kill_after:.0f} s ({'killed' if killed else 'finished first'}; {kept} of {total_parts} "
          f"chunks kept and skipped on resume; done: {done}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
