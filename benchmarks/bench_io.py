"""Benchmark galmoco.io: reading and packing DESaccess-layout cutouts against a plain astropy loop.

Writes N 64x64 four-band (griz) DESaccess-layout cutouts (one folder per object, ``<name>_<band>.fits``
with SCI/MSK/WGT) into a temporary folder, then measures objects per second for

* reading: ``read_cutout`` one by one, and in chunks on a thread pool and on a process pool, against
  ``astropy.io.fits.open`` per file (SCI and WGT to native float32), the plain loop;
* packing: ``pack_cutouts`` (1 and ``--workers`` readers) against the astropy loop appending each object
  to an HDF5 file with h5py;
* peak memory (max RSS of the packing process and its readers) of ``pack_cutouts`` at N/4 and N objects,
  each in a fresh subprocess, to show memory does not grow with N.

Usage: ``python benchmarks/bench_io.py [--quick] [--n N] [--workers W]``; prints a Markdown snippet.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import fitsio
import h5py
import numpy as np
from astropy.io import fits as afits

from galmoco.io.fits import find_cutouts, read_cutout
from galmoco.io.pack import pack_cutouts

BANDS = "griz"
SIZE = 64


def write_cutouts(root: Path, n: int, seed: int = 0) -> list[Path]:
    """N POSDIR folders of 64x64 griz DESaccess-layout files (float32 SCI, int16 MSK, float32 WGT)."""
    rng = np.random.default_rng(seed)
    header = [{"name": "EXTNAME", "value": "SCI"}, {"name": "CTYPE1", "value": "RA---TAN"},
              {"name": "CTYPE2", "value": "DEC--TAN"}, {"name": "CRPIX1", "value": 32.5},
              {"name": "CRPIX2", "value": 32.5}, {"name": "CD1_1", "value": -0.263 / 3600},
              {"name": "CD2_2", "value": 0.263 / 3600}, {"name": "MAGZERO", "value": 30.0}]
    mask = np.zeros((SIZE, SIZE), np.int16)
    folders = []
    for i in range(n):
        name = f"DESJ{i:06d}"
        folder = root / "DES0001+0001" / name
        folder.mkdir(parents=True)
        ra, dec = 10.0 + i * 1e-4, -5.0
        cards = [*header, {"name": "CRVAL1", "value": ra}, {"name": "CRVAL2", "value": dec},
                 {"name": "RA_CUTOUT", "value": ra}, {"name": "DEC_CUTOUT", "value": dec}]
        for band in BANDS:
            with fitsio.FITS(str(folder / f"{name}_{band}.fits"), "rw", clobber=True) as f:
                f.write(rng.normal(100, 5, (SIZE, SIZE)).astype(np.float32), header=cards)
                f.write(mask, extname="MSK")
                f.write(np.full((SIZE, SIZE), 0.04, np.float32), extname="WGT")
        folders.append(folder)
    return folders


def astropy_read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The plain loop: astropy per band file, SCI and WGT to native float32."""
    images, weights = [], []
    for band in BANDS:
        with afits.open(folder / f"{folder.name}_{band}.fits", memmap=False) as hdul:
            images.append(hdul[0].data.astype(np.float32))
            weights.append(hdul["WGT"].data.astype(np.float32))
    return np.stack(images), np.stack(weights)


def astropy_pack(folders: list[Path], out: Path) -> None:
    """The plain loop's pack: read each object with astropy and append it to HDF5 with h5py."""
    with h5py.File(out, "w") as h5:
        shape = (len(BANDS), SIZE, SIZE)
        images = h5.create_dataset("images", (len(folders), *shape), np.float32, chunks=(1, *shape))
        weights = h5.create_dataset("weights", (len(folders), *shape), np.float32, chunks=(1, *shape))
        for i, folder in enumerate(folders):
            images[i], weights[i] = astropy_read(folder)


def _read_chunk(paths: list[Path]) -> int:
    return len([read_cutout(p) for p in paths])


def rate(n: int, fn) -> float:
    """Objects per second of ``fn()`` over ``n`` objects."""
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def pooled(paths: list[Path], pool) -> None:
    with pool:
        list(pool.map(_read_chunk, [paths[i: i + 16] for i in range(0, len(paths), 16)]))


def pack_rss_mib(source: Path, out: Path, workers: int) -> float:
    """Peak RSS (MiB) of a fresh process running pack_cutouts (max of it and its reader processes)."""
    code = ("import resource, sys\nfrom galmoco.io.pack import pack_cutouts\n"
            f"pack_cutouts({str(source)!r}, {str(out)!r}, workers={workers})\n"
            "r = resource.getrusage\n"
            "print(max(r(resource.RUSAGE_SELF).ru_maxrss, r(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                env=env).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 objects instead of 1,000")
    parser.add_argument("--n", type=int, default=None, help="number of objects (overrides --quick)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        folders = write_cutouts(tmp / "job", n)
        print(f"wrote {n} objects x {len(BANDS)} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        write_cutouts(tmp / "small", n // 4, seed=1)
        paths = find_cutouts(tmp / "job")
        w = args.workers
        job = tmp / "job"
        read_base, pack_base = "read: astropy per file (baseline)", "pack: astropy loop + h5py (baseline)"
        rows = {
            read_base: rate(n, lambda: [astropy_read(f) for f in folders]),
            "read: read_cutout, serial": rate(n, lambda: [read_cutout(p) for p in paths]),
            f"read: read_cutout, {w} threads": rate(n, lambda: pooled(paths, ThreadPoolExecutor(w))),
            f"read: read_cutout, {w} processes": rate(n, lambda: pooled(paths, ProcessPoolExecutor(w))),
            pack_base: rate(n, lambda: astropy_pack(folders, tmp / "base.h5")),
            "pack: pack_cutouts, 1 worker": rate(n, lambda: pack_cutouts(job, tmp / "p1.h5", workers=1)),
            f"pack: pack_cutouts, {w} workers": rate(n, lambda: pack_cutouts(job, tmp / "pw.h5", workers=w)),
        }
        rss_small = pack_rss_mib(tmp / "small", tmp / "rs.h5", w)
        rss_large = pack_rss_mib(job, tmp / "rl.h5", w)
    best_pack = max(rows["pack: pack_cutouts, 1 worker"], rows[f"pack: pack_cutouts, {w} workers"])
    print(f"### bench_io ({datetime.date.today().isoformat()})\n")
    print(f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"Command: `python benchmarks/bench_io.py {' '.join(sys.argv[1:])}`; {n} objects, 64x64, griz, "
          "DESaccess layout (4 files of SCI/MSK/WGT per object)\n")
    print("| what | objects/s | vs baseline |\n|---|---:|---:|")
    for name, value in rows.items():
        base = rows[read_base] if name.startswith("read") else rows[pack_base]
        print(f"| {name} | {value:.0f} | {value / base:.2f}x |")
    serial = rows["read: read_cutout, serial"]
    print(f"\nRead speed-up (serial read_cutout / astropy): {serial / rows[read_base]:.2f}x; "
          f"pack speed-up (best pack_cutouts / astropy loop): {best_pack / rows[pack_base]:.2f}x")
    print(f"Peak RSS of pack_cutouts ({w} workers): {rss_small:.0f} MiB at N={n // 4}, "
          f"{rss_large:.0f} MiB at N={n}")


if __name__ == "__main__":
    main()
