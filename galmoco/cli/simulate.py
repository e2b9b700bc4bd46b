"""``galmoco simulate``: a thin wrapper over :func:`galmoco.sim.simulate_survey`."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import click

from galmoco.sim.population import POPULATIONS
from galmoco.sim.simulate import TRUTH_NAME, observation_folder, simulate_survey

__all__ = ["simulate"]

_DEFAULT = {name: p.default for name, p in inspect.signature(simulate_survey).parameters.items()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="Number of objects (with --manifest: at most this many of its rows).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: receives <jobid>/, truth.fits, truth.ecsv (and preview.png).",
)
@click.option(
    "--size",
    type=click.IntRange(min=8),
    default=_DEFAULT["size"],
    show_default=True,
    help="Cutout side in pixels (cutouts at tile edges come out smaller, as at DESaccess).",
)
@click.option("--bands", default=_DEFAULT["bands"], show_default=True, help="Bands, letters of grizy.")
@click.option("--seed", type=int, default=_DEFAULT["seed"], show_default=True, help="Random seed.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=_DEFAULT["workers"],
    show_default=True,
    help="Worker processes; the images do not depend on it.",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=_DEFAULT["manifest"],
    help="Positions (ra,dec CSV/ECSV/FITS) instead of random ones.",
)
@click.option(
    "--preview",
    is_flag=True,
    default=_DEFAULT["preview"],
    help="Also write preview.png, an 8x8 Lupton RGB (i,r,g) contact sheet.",
)
@click.option(
    "--population",
    type=click.Choice(sorted(POPULATIONS)),
    default="default",
    show_default=True,
    help="What the stamps hold: default (DES-like, mostly faint and small) or bright (galaxies only, "
    "i = 16.5-19.5, half-light radius 0.5-2 arcsec).",
)
@click.option(
    "--observations",
    type=click.IntRange(min=1),
    default=_DEFAULT["observations"],
    show_default=True,
    help="Observe every object this often: each further observation (new PSF from the survey's seeing, "
    "sky noise level, sub-pixel offset and noise; the same ids) is a job folder under observation<N>/.",
)
def simulate(
    n: int | None,
    out: Path,
    size: int,
    bands: str,
    seed: int,
    workers: int,
    manifest: Path | None,
    preview: bool,
    observations: int,
    population: str,
) -> None:
    """Simulate a DES-like survey (GalSim) in the layout of a finished DESaccess cutout job.

    Example: galmoco simulate -n 1000 -o data/sim --workers 2 --preview
    """
    if n is None and manifest is None:
        raise click.UsageError("give -n N or --manifest FILE")
    t0 = time.perf_counter()
    job = simulate_survey(
        n,
        out,
        size=size,
        bands=bands,
        seed=seed,
        workers=workers,
        manifest=manifest,
        preview=preview,
        observations=observations,
        population=POPULATIONS[population],
    )
    seconds = time.perf_counter() - t0
    click.echo(f"job folder: {job}")
    click.echo(f"truth: {job.parent / (TRUTH_NAME + '.fits')} (and .ecsv)")
    for o in range(2, observations + 1):
        folder = observation_folder(out, o)
        again = next(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        click.echo(f"observation {o}: {again} (truth: {folder / (TRUTH_NAME + '.fits')})")
    if preview:
        click.echo(f"preview: {job.parent / 'preview.png'}")
    click.echo(f"time: {seconds:.1f} s")
