"""``galmoco explore``: a thin wrapper over :func:`galmoco.analysis.explorer.build_explorer`."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.analysis.explorer import build_explorer
from galmoco.analysis.placement import METRICS

__all__ = ["explore"]

_DEFAULTS = {k: p.default for k, p in inspect.signature(build_explorer).parameters.items()}


@click.command("explore")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML page to write (self-contained: open it in any browser, no server).")
@click.option("--dataset", "store", help="Packed store(s) of the stamps, comma-separated [default: the ones "
              "the embeddings record].")
@click.option("--colour", help="Catalogue column that colours the map [default: class, else the first "
              "physical column].")
@click.option("--max-points", type=click.IntRange(min=1), default=_DEFAULTS["max_points"], show_default=True,
              help="Galaxies drawn at most (a random sample; neighbours are searched among all).")
@click.option("-k", "k", type=click.IntRange(min=1), default=_DEFAULTS["k"], show_default=True,
              help="Neighbours shown on a click.")
@click.option("--metric", type=click.Choice(METRICS), default=_DEFAULTS["metric"], show_default=True,
              help="Distance between latent vectors.")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True, help="Sample and map seed.")
def explore(source: Path, out: Path, store: str | None, colour: str | None, max_points: int, k: int,
            metric: str, seed: int) -> None:
    """One HTML page to explore the latent space of SOURCE (a run directory or an embeddings table):
    the 2-D map coloured by a column, thumbnails on hover, nearest neighbours on a click."""
    path = build_explorer(source, out, store, colour, max_points, k, metric, seed)
    click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
