"""``galmoco embed``: a thin wrapper over :func:`galmoco.embed.embed_store`."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.embed import embed_store

__all__ = ["embed"]

_DEFAULTS = {k: p.default for k, p in inspect.signature(embed_store).parameters.items()}


@click.command("embed")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output table: .parquet, .fits or .h5.")
@click.option("--transforms", is_flag=True, help="Also embed the 7 flipped/rotated copies and the 45-degree "
              "turn (latent_<name>).")
@click.option("--projection", "with_projection", is_flag=True,
              help="Also write the projection head's output.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS["batch_size"], show_default=True,
              help="Stamps per forward pass.")
@click.option("--device", default=_DEFAULTS["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
def embed(checkpoint: Path, dataset: Path, out: Path, transforms: bool, with_projection: bool,
          batch_size: int, device: str) -> None:
    """Write the latent vectors of a packed DATASET.h5 with CHECKPOINT (a .pt file or a run directory)."""
    path = embed_store(checkpoint, dataset, out, transforms=transforms, with_projection=with_projection,
                       batch_size=batch_size, device=device)
    click.echo(f"wrote {path}")
