"""``galmoco pack``: a thin wrapper over :func:`galmoco.io.pack.pack_cutouts`."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.errors import GalmocoError
from galmoco.io.fits import parse_bands
from galmoco.io.pack import pack_cutouts

__all__ = ["pack"]

_DEFAULT = {name: p.default for name, p in inspect.signature(pack_cutouts).parameters.items()}


def _bands(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_bands(value)
    except GalmocoError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HDF5 store to write (e.g. dataset.h5).")
@click.option("--bands", default=_DEFAULT["bands"], show_default=True, callback=_bands,
              help="Bands to pack, in this order.")
@click.option("--size", type=click.IntRange(min=1), default=_DEFAULT["size"],
              help="Cutout size in pixels (square); larger cutouts are centre-cropped. "
                   "Default: the most common size among the first 64 objects read.")
@click.option("--pad", is_flag=True, default=_DEFAULT["pad"],
              help="Pad cutouts smaller than --size (weight 0 in the pad) instead of skipping them.")
@click.option("--workers", type=click.IntRange(min=1), default=_DEFAULT["workers"],
              help="Reader processes (1: read in this process). Default: CPU count - 1, at most 8.")
@click.option("--resume", is_flag=True, default=_DEFAULT["resume"],
              help="Continue the interrupted pack left in OUT.partial.")
@click.option("--strict", is_flag=True, default=_DEFAULT["strict"],
              help="Fail on the first bad cutout instead of skipping it.")
@click.option("--catalog", type=click.Path(path_type=Path), default=_DEFAULT["catalog"],
              help="A table (FITS, ECSV, CSV) whose columns are joined into the store's catalogue by id.")
@click.option("--catalog-id-column", default=_DEFAULT["catalog_id_column"], show_default=True,
              help="The --catalog column holding the object id.")
def pack(sources: tuple[Path, ...], out: Path, bands: str, size: int | None, pad: bool, workers: int | None,
         resume: bool, strict: bool, catalog: Path | None, catalog_id_column: str) -> None:
    """Pack FITS cutouts into one HDF5 dataset file.

    SOURCES are folders (DESaccess job folders, folders of Legacy Survey cubes; searched recursively),
    single cutout files (.fits, .fits.fz), or text/CSV files listing paths (one per line, or a 'path'
    column). Cutouts that cannot be packed are skipped and listed in OUT.skipped.csv.

    Example: galmoco pack data/job123 -o dataset.h5 --bands griz --size 64 --pad
    """
    if pad and size is None:
        raise click.UsageError("--pad needs --size N (the side the cutouts were requested with)")
    result = pack_cutouts(sources, out, bands=bands, size=size, pad=pad, workers=workers, resume=resume,
                          strict=strict, catalog=catalog, catalog_id_column=catalog_id_column)
    resumed = f" ({result.n_resumed} from the interrupted run)" if result.n_resumed else ""
    click.echo(f"packed {result.n_packed} objects{resumed}, skipped {len(result.skipped)}, "
               f"in {result.seconds:.1f} s -> {result.path}")
    if result.n_catalog_matched is not None:
        click.echo(f"catalogue: {result.n_catalog_matched} of {result.n_packed} objects matched, "
                   f"{result.n_packed - result.n_catalog_matched} unmatched (in_catalog False)")
    if result.skipped_csv is not None:
        click.echo(f"skipped objects and reasons: {result.skipped_csv}")
