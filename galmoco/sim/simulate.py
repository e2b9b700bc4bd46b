"""The survey driver: positions -> parallel rendering -> a finished DESaccess job folder + truth catalogue.

Determinism: object ``k`` draws everything (contents, PSF, sky level, sub-pixel offset, noise, clump
positions) from ``SeedSequence(seed, spawn_key=(0, k))``, so the images do not depend on the number
of workers or on how objects are chunked. Positions come from ``spawn_key=(1,)``.

Repeated observations (``observations=2``): observation ``o >= 2`` of object ``k`` has the same contents
(the same draws from its stream) but re-draws its observing conditions from
``SeedSequence(seed, spawn_key=(2, o, k))``: a PSF from the survey's seeing distribution, a sky noise
level (the depth scatter), a sub-pixel offset uniform in +-0.5 px in x and y, and an independent noise
realisation. It is written as a second DESaccess job folder with the same object ids under
``out/observation<o>/`` (with its own truth table), so it packs and embeds like the first.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from galmoco.errors import GalmocoError
from galmoco.fetch.manifest import des_basename, read_manifest
from galmoco.files import atomic_write_text
from galmoco.sim import layout
from galmoco.sim.footprint import (
    TILE_PIXELS,
    Tile,
    draw_positions,
    in_footprint,
    tile_of,
    world_to_tile_pixel,
)
from galmoco.sim.job_files import TRUTH_NAME, write_job_files, write_truth
from galmoco.sim.population import PopulationConfig, draw_object, draw_psf
from galmoco.sim.render import ObservingConfig, render_stamp, sky_sigma_from_depth
from galmoco.surveys import parse_bands

__all__ = [
    "SimulatedObject",
    "SimSpec",
    "simulate_object",
    "simulate_survey",
    "observation_folder",
    "write_positions_manifest",
    "TRUTH_NAME",
]



@dataclass(frozen=True)
class SimSpec:
    """What every object of a survey shares."""

    seed: int = 0
    bands: tuple[str, ...] = ("g", "r", "i", "z")
    size: int = 64
    population: PopulationConfig = field(default_factory=PopulationConfig)
    observing: ObservingConfig = field(default_factory=ObservingConfig)


@dataclass
class SimulatedObject:
    """One rendered cutout (already trimmed) and its truth row."""

    image: np.ndarray  # (B, H, W) float32 counts
    weight: np.ndarray  # (B, H, W) float32 inverse variance
    mask: np.ndarray  # (H, W) int32
    truth: dict
    tile: Tile
    x: float  # 0-based tile pixel of the position
    y: float
    x_cut: float  # 0-based position in the cutout
    y_cut: float


def observation_folder(out: str | Path, observation: int) -> Path:
    """Where ``simulate_survey(..., out)`` writes observation ``observation`` (1: ``out`` itself)."""
    return Path(out) if observation == 1 else Path(out) / f"observation{observation}"


def simulate_object(
    index: int, ra: float, dec: float, spec: SimSpec, noise: bool = True, observation: int = 1
) -> SimulatedObject:
    """Render object ``index`` at (ra, dec) degrees; a pure function of its arguments.

    Args:
        index: the object's number in the survey (selects its random stream).
        ra, dec: position (degrees), inside the footprint.
        spec: the survey's shared settings.
        noise: add noise (False: the noiseless model, for tests).
        observation: 1 for the survey; 2, 3... re-observe the same object under new conditions (PSF,
            sky noise, sub-pixel offset and noise drawn again, module docstring).

    Returns:
        The cutout as DESaccess would return it (trimmed at tile edges) and its truth.
    """
    if observation < 1:
        raise GalmocoError(f"observation={observation}: must be at least 1")
    ss = np.random.SeedSequence(spec.seed, spawn_key=(0, index))
    rng = np.random.default_rng(ss)
    obs, size = spec.observing, spec.size
    params = draw_object(rng, spec.population, obs.psf_fwhm, obs.psf_scatter, size * obs.pixel_scale)
    depth_factor = float(np.exp(rng.normal(0, obs.depth_scatter)))
    shift = (0.0, 0.0)
    if observation > 1:  # the same contents, new observing conditions from a stream of their own
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2, observation, index)))
        fwhm, g1, g2 = draw_psf(rng, obs.psf_fwhm, obs.psf_scatter)
        params = replace(params, psf_fwhm=fwhm, psf_g1=g1, psf_g2=g2)
        depth_factor = float(np.exp(rng.normal(0, obs.depth_scatter)))
        shift = tuple(float(v) for v in rng.uniform(-0.5, 0.5, size=2))
    sky = {
        b: sky_sigma_from_depth(
            obs.depth_10sigma[b], obs.depth_aperture_arcsec, obs.pixel_scale, obs.zeropoint
        )
        * depth_factor
        for b in spec.bands
    }
    tile = tile_of(ra, dec)
    x, y = world_to_tile_pixel(tile, ra, dec)
    rows, cols, x_cut, y_cut = layout.cutout_box(x, y, size, TILE_PIXELS)
    # the untrimmed stamp's true centre is at 0-based (size-1)/2; the position sits at x - ceil(x - size/2)
    offset = (x - np.ceil(x - size / 2) - (size - 1) / 2 + shift[0],
              y - np.ceil(y - size / 2) - (size - 1) / 2 + shift[1])
    galsim_seed = int(ss.generate_state(1)[0]) + 1
    image, weight, mask = render_stamp(params, spec.bands, size, offset, sky, obs, rng, galsim_seed, noise)
    t = params.truth
    truth = {"id": des_basename(ra, dec), "ra": ra, "dec": dec, "tilename": tile.name, "index": index}
    truth.update({f"mag_{b}": t["mag"][b] for b in spec.bands})
    truth.update(
        {
            k: t[k]
            for k in (
                "hlr_arcsec",
                "bulge_frac",
                "sersic_n",
                "ellipticity",
                "e1",
                "e2",
                "pa_deg",
                "n_clumps",
                "has_neighbour",
                "has_star",
            )
        }
    )
    trimmed = (rows.stop - rows.start, cols.stop - cols.start) != (size, size)
    truth.update(trimmed=bool(trimmed), height=rows.stop - rows.start, width=cols.stop - cols.start)
    truth.update({f"psf_fwhm_{b}": params.psf_fwhm[b] for b in spec.bands})
    truth.update({f"sky_sigma_{b}": sky[b] for b in spec.bands})
    truth.update({"class": t["class"], "class_id": t["class_id"]})
    if observation > 1:
        truth.update(observation=observation, shift_x_pix=shift[0], shift_y_pix=shift[1])
    return SimulatedObject(
        image[:, rows, cols], weight[:, rows, cols], mask[rows, cols], truth, tile, x, y, x_cut, y_cut
    )


def _render_chunk(args: tuple[list[tuple[int, float, float]], SimSpec, str, int]) -> list[dict]:
    """Worker: render and write a chunk of objects; return their truth rows (with file names)."""
    items, spec, job_dir, observation = args
    rows = []
    tiles_made: set[str] = set()  # one mkdir per object, not pathlib's parents=True retries
    for index, ra, dec in items:
        obj = simulate_object(index, ra, dec, spec, observation=observation)
        tile_dir = os.path.join(job_dir, obj.tile.name)
        if obj.tile.name not in tiles_made:
            os.makedirs(tile_dir, exist_ok=True)
            tiles_made.add(obj.tile.name)
        posdir = Path(tile_dir, obj.truth["id"])
        posdir.mkdir()
        files, nbytes = layout.write_cutout_fits(
            posdir,
            obj.truth["id"],
            spec.bands,
            obj.image,
            obj.mask,
            obj.weight,
            obj.tile,
            obj.x,
            obj.y,
            obj.x_cut,
            obj.y_cut,
            ra,
            dec,
        )
        rows.append({**obj.truth, "_files": files, "_bytes": nbytes})
    return rows


def _positions(n: int | None, manifest: str | Path | None, spec: SimSpec, trimmed_fraction: float):
    """(index, ra, dec) inside the footprint, and the unmatched (RA, DEC) lists."""
    if manifest is None:
        if n is None or n < 1:
            raise GalmocoError(f"n={n}: give a number of objects >= 1 (or a manifest)")
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(1,)))
        pos = draw_positions(n, rng, spec.size, trimmed_fraction)
    else:
        table = read_manifest(manifest, allow_coadd_ids=False)
        pos = np.column_stack([np.round(table["ra"], 6), np.round(table["dec"], 6)])[: n if n else None]
    inside = np.array([in_footprint(ra, dec) for ra, dec in pos], dtype=bool)
    items = [(i, float(ra), float(dec)) for i, (ra, dec) in enumerate(pos) if inside[i]]
    if not items:
        raise GalmocoError(f"{manifest}: no position lies in the simulated DES footprint")
    return items, (pos[~inside, 0].tolist(), pos[~inside, 1].tolist())


def simulate_survey(
    n: int | None,
    out: str | Path,
    size: int = 64,
    bands: str = "griz",
    seed: int = 0,
    workers: int = 1,
    manifest: str | Path | None = None,
    preview: bool = False,
    population: PopulationConfig | None = None,
    observing: ObservingConfig | None = None,
    trimmed_fraction: float = 0.02,
    chunk: int = 16,
    observations: int = 1,
) -> Path:
    """Simulate a survey into ``out/<jobid>/`` in the layout of a finished DESaccess cutout job.

    Args:
        n: number of objects (with a manifest: at most this many of its rows; None = all).
        out: output folder; receives the job folder, ``truth.fits``/``truth.ecsv`` and ``preview.png``.
        size: cutout side in pixels (tile-edge cutouts come out smaller).
        bands: bands, a subset of ``grizy`` (lowercase, DES order kept as given).
        seed: random seed; the same seed gives the same images whatever ``workers``.
        workers: worker processes (1: in this process).
        manifest: positions (``ra, dec`` CSV/ECSV/FITS); None draws them in the footprint.
        preview: also write an 8x8 Lupton RGB contact sheet ``preview.png`` (needs g, r, i).
        population: population fractions/distributions (default :class:`PopulationConfig`).
        observing: PSF/noise settings (default :class:`ObservingConfig`).
        trimmed_fraction: fraction of drawn positions near tile edges (ignored with a manifest).
        chunk: objects per worker task.
        observations: how often every object is observed; each observation after the first is a job
            folder of its own with the same ids under ``out/observation<o>/`` (:func:`observation_folder`),
            with its truth table beside it.

    Returns:
        The job folder ``out/<jobid>`` of the first observation (jobid: 32 hex digits derived from the
        inputs).

    Raises:
        GalmocoError: bad bands, size, workers or observations, an unreadable manifest, or an existing
            job folder.
    """
    band_tuple = parse_bands(bands, "bands=")
    if not 8 <= size <= 2736:  # 2736 px = 12 arcmin, DESaccess's maximum
        raise GalmocoError(f"size={size}: must be between 8 and 2736 pixels")
    if workers < 1:
        raise GalmocoError(f"workers={workers}: must be at least 1")
    if observations < 1:
        raise GalmocoError(f"observations={observations}: must be at least 1")
    if preview and not set("gri") <= set(band_tuple):
        raise GalmocoError(f"--preview needs bands g, r and i; bands={bands!r}")
    spec = SimSpec(seed, band_tuple, size, population or PopulationConfig(), observing or ObservingConfig())
    items, unmatched = _positions(n, manifest, spec, trimmed_fraction)
    out = Path(out)
    base = f"{seed}|{size}|{bands}|{spec}|{items}"
    jobs = []  # (observation, its folder, its job id): the first keeps the single-observation id
    for o in range(1, observations + 1):
        digest = hashlib.md5((base + (f"|observation{o}" if o > 1 else "")).encode()).hexdigest()
        jobs.append((o, observation_folder(out, o), digest))
        if (observation_folder(out, o) / digest).exists():
            raise GalmocoError(f"{observation_folder(out, o) / digest}: already exists (the same survey was "
                               "simulated here); delete it first")
    for o, folder, digest in jobs:
        job_dir, truth_rows = _simulate_job(items, unmatched, spec, folder, digest, workers, chunk, o)
        if o == 1:
            first, first_rows = job_dir, truth_rows
    if preview:
        from galmoco.sim.preview import write_preview  # matplotlib/astropy.visualization only when asked

        write_preview(first, first_rows, out / "preview.png")
    return first


def _simulate_job(
    items: list[tuple[int, float, float]], unmatched: tuple[list, list], spec: SimSpec, out: Path,
    digest: str, workers: int, chunk: int, observation: int,
) -> tuple[Path, list[dict]]:
    """Render one observation of every object into ``out/<digest>`` (atomically) and its truth beside it."""
    job_dir, tmp_dir = out / digest, out / f".{digest}.partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    chunks = [(items[i : i + chunk], spec, str(tmp_dir), observation) for i in range(0, len(items), chunk)]
    truth_rows: list[dict] = []
    desc = "simulate" if observation == 1 else f"observation {observation}"
    try:
        with tqdm(total=len(items), desc=desc, unit="obj", disable=None) as bar:
            for rows in _map(chunks, workers):
                truth_rows += rows
                bar.update(len(rows))
        elapsed = time.perf_counter() - t0
        write_job_files(tmp_dir, digest, truth_rows, "".join(spec.bands), spec.size, unmatched, elapsed)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    os.replace(tmp_dir, job_dir)
    write_truth(out, truth_rows, spec.bands)
    return job_dir, truth_rows


def _map(chunks: list, workers: int):
    """Results of :func:`_render_chunk` in order, in this process or in ``workers`` spawned processes.

    Every renderer runs single-threaded: numpy's OpenBLAS otherwise starts a thread per core for the
    small clump matrix products (``render._phase``), which doubled the CPU time per object and let
    one in-process "worker" occupy two cores. Thread counts do not change the results (BLAS splits
    the output, not the sums).
    """
    if workers == 1:
        with threadpool_limits(limits=1):
            yield from map(_render_chunk, chunks)
        return
    # children read these at import: one thread each (GalSim's OpenMP, BLAS) or they fight for cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    with _context().Pool(workers, initializer=threadpool_limits, initargs=(1,)) as pool:
        yield from pool.imap(_render_chunk, chunks)


def _context() -> mp.context.BaseContext:
    """Worker processes that start without re-importing GalSim each (~1 s of CPU per worker).

    A fork server (POSIX) imports this module once and forks the workers from that single-threaded
    process; it lives as long as the calling process, so later surveys start at no cost. A plain
    ``fork`` of the caller is avoided: it may hold threads (OpenMP, torch, tqdm's monitor).
    Elsewhere (Windows) workers are spawned.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def write_positions_manifest(
    path: str | Path, n: int = 5000, seed: int = 0, size: int = 64, trimmed_fraction: float = 0.02
) -> Path:
    """Write ``n`` footprint positions as a manifest CSV ``ra,dec,id`` (id = the DESaccess BASENAME).

    The positions are those :func:`simulate_survey` draws for the same ``seed``, ``size`` and
    ``trimmed_fraction``, so ``simulate_survey(n, out, manifest=path, seed=seed)`` reproduces that
    survey. ``data_manifests/simulated_survey.csv`` is ``write_positions_manifest(path, 5000, 0)``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    pos = draw_positions(n, rng, size, trimmed_fraction)
    lines = ["ra,dec,id"] + [f"{ra:.6f},{dec:.6f},{des_basename(ra, dec)}" for ra, dec in pos]
    return atomic_write_text(path, "\n".join(lines) + "\n")
