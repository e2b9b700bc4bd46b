"""``galmoco demo``: the main job end to end on a simulated survey (what ``make demo`` runs)."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
from astropy.table import Table

from galmoco.config import FRAMES, ModelConfig
from galmoco.data.transforms import TRANSFORMS
from galmoco.demo import DEMO_EPOCHS, DemoResult, demo_runs, run_demo

__all__ = ["demo"]

_DEFAULTS = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}

#: what the encoder's frame does to the flips and quarter turns, as the printout's note says it
_FRAME_NOTES = {
    "o2": (" the encoder reads every stamp in its pose frame (model.frame: o2), so flips and turns by",
           " any angle reach it as nearly the same pixels; what remains is interpolation and noise)"),
    "d4": (" the encoder reads every stamp in its canonical D4 frame (model.frame: d4), so the flips",
           " and quarter turns of the square reach it as the same pixels)"),
    "none": (" model.frame: none, the original study's setting: the encoder reads every stamp as given,",
             " so its invariance to flips and turns is what training learned)"),
}


def _symmetry_lines(frame: str, result: DemoResult, d4: Table, runs: tuple[str, ...]) -> list[str]:
    """The printout's note on the frame and its line on the 7 flips and quarter turns: a pipeline check
    in a frame that makes them exact; without one, the original study's reading (``symmetry_table``)."""
    lines = list(_FRAME_NOTES[frame])
    if frame != "none":
        return lines + ["Pipeline check, the 7 flips and quarter turns of the square (lowest of the 7): "
                        + ", ".join(f"{run} {min(d4[f'rank1_{run}']):.3f}" for run in runs)]
    symmetry = result.symmetry
    return lines + [
        f"The 7 flips and quarter turns of the square, pooled: ranked 1st over all / with r < "
        f"{symmetry.meta['bright']:g}, and within rank {symmetry.meta['rank']} (the study's histogram bin): "
        + "; ".join(f"{row['run']} {row['rank1']:.3f} / {row['rank1_bright']:.3f}, {row['within_rank']:.3f}"
                    for row in symmetry)]


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
@click.option("--frame", type=click.Choice(FRAMES), default=ModelConfig.frame, show_default=True,
              help="The frame both runs' encoders read stamps in. none: the original study's setting (flips "
                   "must be learned); its runs (ae-none, moco-ae-none) and report-none.html share --out.")
def demo(out: Path, n: int, epochs: int, device: str, seed: int, workers: int, frame: str) -> None:
    """Simulate a survey, pack it, train `ae` and `moco-ae`, and compare them in one report.

    Stages already finished in --out are reused, so an interrupted demo continues where it stopped.
    """
    result = run_demo(out, n=n, epochs=epochs, device=device, seed=seed, workers=workers, echo=click.echo,
                      frame=frame)
    runs = demo_runs(frame)
    headline = result.headline
    d4 = headline[[str(t) in TRANSFORMS for t in headline["transform"]]]
    rest = headline[[str(t) not in TRANSFORMS for t in headline["transform"]]]
    click.echo("")
    click.echo(f"Similarity placement: how often a galaxy's transformed copy is ranked 1st among all "
               f"{headline['n'][0]} originals")
    click.echo("(L1 distance between latent vectors; empty-sky stamps left out; ties count against the copy;")
    for line in _symmetry_lines(frame, result, d4, runs):
        click.echo(line)
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
