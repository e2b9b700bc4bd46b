"""``galmoco embed``: a thin wrapper over :func:`galmoco.embed.embed_store`."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.data.transforms import parse_angles
from galmoco.embed import embed_store

__all__ = ["embed"]

_DEFAULTS = {k: p.default for k, p in inspect.signature(embed_store).parameters.items()}


@click.command("embed")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output table: .parquet, .fits or .h5.")
@click.option("--transforms", is_flag=True, help="Also embed the transformed copies (latent_<name>): the 7 "
              "flips and quarter turns, a turn by each of --angles and rotrand.")
@click.option("--angles", default=",".join(f"{a:g}" for a in _DEFAULTS["angles"]) + ",rand",
              show_default=True,
              help="With --transforms: comma-separated turns in degrees (rot<angle>); 'rand' adds rotrand, "
                   "a seeded uniform angle per galaxy (written as angle_rotrand).")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True,
              help="Seeds the random angles and the sky noise filling turned corners.")
@click.option("--projection", "with_projection", is_flag=True,
              help="Also write the projection head's output (for the copies too, projection_<name>).")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS["batch_size"], show_default=True,
              help="Stamps per forward pass.")
@click.option("--device", default=_DEFAULTS["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
def embed(checkpoint: Path, dataset: Path, out: Path, transforms: bool, angles: str, seed: int,
          with_projection: bool, batch_size: int, device: str) -> None:
    """Write the latent vectors of a packed DATASET.h5 with CHECKPOINT (a .pt file or a run directory)."""
    turns, random_rotation = parse_angles(angles)
    path = embed_store(checkpoint, dataset, out, transforms=transforms, with_projection=with_projection,
                       batch_size=batch_size, device=device, angles=turns, random_rotation=random_rotation,
                       seed=seed)
    click.echo(f"wrote {path}")
