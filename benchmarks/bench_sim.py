"""Simulator throughput: four-band 64x64 stamps per second per core.

Compares, in one run: the baseline (the same stamps drawn with GalSim's own ``drawImage``, one
``Convolve`` per band), galmoco's renderer in memory (``simulate_object``), and the whole survey
(render + FITS writing + job files) with 1 and 2 worker processes.

Usage: python benchmarks/bench_sim.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date

os.environ.setdefault("OMP_NUM_THREADS", "1")

import galsim  # noqa: E402
import numpy as np  # noqa: E402

from galmoco.sim import SimSpec, simulate_object, simulate_survey  # noqa: E402
from galmoco.sim.population import draw_object  # noqa: E402


def galsim_baseline(n: int, spec: SimSpec) -> float:
    """Stamps/s drawing each object's components with GalSim ``drawImage`` (noise-free)."""
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


def survey(n: int, workers: int) -> float:
    """Stamps/s per core of a whole :func:`simulate_survey` run (process start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate_survey(n, tmp, seed=workers, workers=workers)
        return n / (time.perf_counter() - t0) / workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args()
    n_base, n_mem, n_survey = (30, 200, 200) if args.quick else (200, 2000, 3000)
    spec = SimSpec()
    base = galsim_baseline(n_base, spec)
    mem = in_memory(n_mem, spec)
    one = survey(n_survey, 1)
    two = survey(n_survey, 2)
    cmd = "python benchmarks/bench_sim.py" + (" --quick" if args.quick else "")
    print(
        f"### Simulator throughput ({date.today()}, {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]})\n"
    )
    print(f"`{cmd}`: four-band (griz) 64x64 stamps of the default population\n")
    print("| method | stamps/s per core | vs GalSim drawImage |")
    print("|---|---|---|")
    print(f"| GalSim drawImage per band (baseline, no noise, no files) | {base:.0f} | 1.0x |")
    print(f"| galmoco renderer, in memory ({n_mem} stamps) | {mem:.0f} | {mem / base:.1f}x |")
    print(f"| simulate_survey, 1 worker, with files ({n_survey}) | {one:.0f} | {one / base:.1f}x |")
    print(f"| simulate_survey, 2 workers, with files ({n_survey}) | {two:.0f} | {two / base:.1f}x |")


if __name__ == "__main__":
    main()
