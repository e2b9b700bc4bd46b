"""``galmoco demo``: the main job end to end on a simulated survey (what ``make demo`` runs)."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.data.transforms import TRANSFORMS
from galmoco.demo import DEMO_EPOCHS, DEMO_RUNS, run_demo

__all__ = ["demo"]

_DEFAULTS = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}


@click.command("demo")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=_DEFAULTS["out"],
              show_default=True, help="Folder for the survey, dataset, runs and report.")
@click.option("--n", type=click.IntRange(min=64), default=_DEFAULTS["n"], show_default=True,
              help="Galaxies to simulate.")
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True,
              help="Training epochs per run.")
@click.option("--device", default=_DEFAULTS["device"], show_default=True, help="cpu, cuda or auto.")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True, help="Random seed.")
@click.option("--workers", type=click.IntRange(min=1), default=_DEFAULTS["workers"], show_default=True,
              help="Processes for simulation and packing.")
def demo(out: Path, n: int, epochs: int, device: str, seed: int, workers: int) -> None:
    """Simulate a survey, pack it, train `ae` and `moco-ae`, and compare them in one report.

    Stages already finished in --out are reused, so an interrupted demo continues where it stopped.
    """
    result = run_demo(out, n=n, epochs=epochs, device=device, seed=seed, workers=workers, echo=click.echo)
    headline = result.headline
    d4 = headline[[str(t) in TRANSFORMS for t in headline["transform"]]]
    rest = headline[[str(t) not in TRANSFORMS for t in headline["transform"]]]
    click.echo("")
    click.echo(f"Similarity placement: how often a galaxy's transformed copy is ranked 1st among all "
               f"{headline['n'][0]} originals")
    click.echo("(L1 distance between latent vectors; empty-sky stamps left out; ties count against the copy;")
    click.echo(" the encoder reads every stamp in its pose frame (model.frame: o2), so flips and turns by")
    click.echo(" any angle reach it as nearly the same pixels; what remains is interpolation and noise)")
    click.echo("Pipeline check, the 7 flips and quarter turns of the square (lowest of the 7): " + ", ".join(
        f"{run} {min(d4[f'rank1_{run}']):.3f}" for run in DEMO_RUNS))
    click.echo("Turns by other angles (rotrand: a random angle per galaxy) and the second observation "
               "(observed_again), rank-1 fraction and median rank:")
    for name in rest.colnames[2:]:
        rest[name].format = ".3f" if name.startswith("rank1") else ".0f"
    click.echo("\n".join(rest.pformat(max_lines=-1, max_width=-1)))
    click.echo("")
    click.echo("Fraction ranked 1st by r-band magnitude bin (n: galaxies in the bin):")
    for name in result.breakdown.colnames[2:]:
        result.breakdown[name].format = ".3f"
    click.echo("\n".join(result.breakdown.pformat(max_lines=-1, max_width=-1)))
    for name in ("galaxy_mse", "sky_mse"):
        result.reconstruction[name].format = ".3f"
    click.echo("")
    click.echo("Masked reconstruction error (normalised units, mean squared error):")
    click.echo("\n".join(result.reconstruction.pformat(max_lines=-1, max_width=-1)))
    click.echo("")
    click.echo("Time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    click.echo(f"Report: {result.report}")
