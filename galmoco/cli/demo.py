"""``galmoco demo``: the main job end to end on a simulated survey (what ``make demo`` runs)."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.demo import DEMO_EPOCHS, run_demo

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
    click.echo("")
    click.echo("Similarity placement: fraction of transformed copies ranked 1st among all originals")
    n_used = result.headline["n"][0]
    click.echo(f"(L1 distance between latent vectors; {n_used} galaxies, empty-sky stamps left out;")
    click.echo(" the encoder reads every stamp in its pose frame (model.frame: o2), so flips and turns by")
    click.echo(" any angle reach it as nearly the same pixels; what remains is interpolation and noise)")
    for name in result.headline.colnames[2:]:
        result.headline[name].format = ".3f"
    for name in ("galaxy_mse", "sky_mse"):
        result.reconstruction[name].format = ".3f"
    click.echo("\n".join(result.headline.pformat(max_lines=-1, max_width=-1)))
    click.echo("")
    click.echo("Masked reconstruction error (normalised units, mean squared error):")
    click.echo("\n".join(result.reconstruction.pformat(max_lines=-1, max_width=-1)))
    click.echo("")
    click.echo("Time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    click.echo(f"Report: {result.report}")
