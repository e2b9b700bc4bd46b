"""Simulator throughput: four-band (griz) 64x64 galaxies per second per core, end to end.

Compares, in one run: the baseline (the same stamps drawn with GalSim's own ``drawImage``, one
``Convolve`` per band, single-threaded, no noise, no files), galmoco's renderer in memory
(``simulate_object``), and the whole survey (``simulate_survey``: render + FITS files + job files +
truth catalogue) with 1 and 2 worker processes, run alternately (1, 2, 1, 2) so that a change in the
machine's load hits both.

Per core, the survey gives ``N / wall / workers`` (what a user sees; it needs the cores to be free,
so the load averages are printed) and, for 1 worker (in this process), ``N / CPU seconds``, which
depends much less on other processes. (The 2-worker processes are children of the fork server, so
their CPU time is not visible here.) Worker start-up (the fork server imports GalSim once, ~1 s,
in the first 2-worker run) is included, not subtracted; the best of two runs is reported.

Usage: python benchmarks/bench_sim.py [--quick] [-n N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date

os.environ.setdefault("OMP_NUM_THREADS", "1")

import galsim  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from galmoco.sim import SimSpec, simulate_object, simulate_survey  # noqa: E402
from galmoco.sim.population import draw_object  # noqa: E402


def galsim_baseline(n: int, spec: SimSpec) -> float:
    """Stamps/s drawing each object's components with GalSim ``drawImage`` (noise-free, no files)."""
    obs = spec.observing
    params = [
        draw_object(np.random.default_rng(k), spec.population, obs.psf_fwhm, 0.1, 64 * 0.263)
        for k in range(n)
    ]
    canvas = galsim.ImageF(64, 64, scale=obs.pixel_scale)
    t0 = time.perf_counter()
    for p in params:
        for band in spec.bands:
            if not p.components:
                continue
            parts = []
            for c in p.components:
                if c.kind == "point":
                    prof = galsim.DeltaFunction(flux=c.flux[band])
                elif c.kind == "knots":
                    prof = galsim.RandomKnots(c.n_knots, half_light_radius=c.hlr, flux=c.flux[band])
                else:
                    cls = galsim.DeVaucouleurs if c.kind == "bulge" else galsim.Exponential
                    prof = cls(half_light_radius=c.hlr, flux=c.flux[band])
                if c.kind != "point":
                    prof = prof.shear(q=c.q, beta=c.pa_deg * galsim.degrees)
                parts.append(prof.shift(c.dx, c.dy))
            psf = galsim.Moffat(beta=3, fwhm=p.psf_fwhm[band])
            galsim.Convolve(galsim.Add(parts), psf).drawImage(canvas, method="auto")
    return n / (time.perf_counter() - t0)


def in_memory(n: int, spec: SimSpec) -> float:
    """Stamps/s of :func:`simulate_object` (render + noise, no files)."""
    simulate_object(0, 30.0, -30.0, spec)  # warm the profile tables
    t0 = time.perf_counter()
    for k in range(n):
        simulate_object(k, 30.0, -30.0 + 1e-4 * k, spec)
    return n / (time.perf_counter() - t0)


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def survey(n: int, workers: int, seed: int) -> tuple[float, float]:
    """One :func:`simulate_survey` run: (wall seconds, CPU seconds of this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        simulate_survey(n, tmp, seed=seed, workers=workers)
        return time.perf_counter() - t0, _cpu_seconds() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("-n", type=int, default=None, help="objects per survey run (default 2000; quick 300)")
    args = ap.parse_args()
    n_base, n_mem, n_survey = (30, 200, 300) if args.quick else (200, 1000, 2000)
    n_survey = args.n or n_survey
    spec = SimSpec()
    load_before = os.getloadavg()
    with threadpool_limits(limits=1):  # one core each, as the survey's workers run
        base = galsim_baseline(n_base, spec)
        mem = in_memory(n_mem, spec)
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for rep, workers in enumerate((1, 2, 1, 2)):
        runs[workers].append(survey(n_survey, workers, seed=rep))
    load_after = os.getloadavg()
    wall = {w: min(t for t, _ in r) for w, r in runs.items()}  # the least disturbed run of each
    cpu = {w: min(c for _, c in r) for w, r in runs.items()}

    cmd = (
        "python benchmarks/bench_sim.py"
        + (" --quick" if args.quick else "")
        + (f" -n {args.n}" if args.n else "")
    )
    print(
        f"### Simulator throughput ({date.today()}, {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]})\n"
    )
    print(
        f"`{cmd}`: four-band (griz) 64x64 stamps of the default population; load average (1, 5, 15 min) "
        f"{' '.join(f'{v:.2f}' for v in load_before)} before, {' '.join(f'{v:.2f}' for v in load_after)} "
        f"after; survey times are the best of two runs, start-up included.\n"
    )
    print("| method | galaxies/s per core | vs GalSim drawImage |")
    print("|---|---|---|")
    print(f"| GalSim drawImage per band (baseline; no noise, no files) | {base:.0f} | 1.0x |")
    print(f"| galmoco renderer, in memory ({n_mem}) | {mem:.0f} | {mem / base:.1f}x |")
    for w in (1, 2):
        per_core = n_survey / wall[w] / w
        print(
            f"| simulate_survey, {w} worker(s), files, N={n_survey}: N/wall/workers | {per_core:.0f} "
            f"| {per_core / base:.1f}x |"
        )
    print(
        f"| simulate_survey, 1 worker, files, N={n_survey}: N/CPU s | {n_survey / cpu[1]:.0f} "
        f"| {n_survey / cpu[1] / base:.1f}x |"
    )
    print(
        f"\n2 workers vs 1: {wall[1] / wall[2]:.2f}x faster in wall time "
        f"({wall[1]:.1f} s vs {wall[2]:.1f} s for {n_survey} galaxies)."
    )


if __name__ == "__main__":
    main()
