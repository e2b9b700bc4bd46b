"""``galmoco index`` and ``galmoco search``: thin wrappers over :mod:`galmoco.similarity.index` and
:mod:`galmoco.similarity.query`."""

from __future__ import annotations

from pathlib import Path

import click

from galmoco.analysis.gallery import neighbour_gallery_png
from galmoco.errors import GalmocoError
from galmoco.similarity.index import KINDS, METRICS, build_index, neighbour_table
from galmoco.similarity.query import search as run_search

__all__ = ["index", "search"]


@click.command("index")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The index folder (index.faiss, catalog.parquet, info.json).")
@click.option("--column", default="latent", show_default=True, help="The vector column to index.")
@click.option("--metric", type=click.Choice(METRICS), default="l2", show_default=True,
              help="Distance between vectors.")
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="flat (exact), ivf (approximate), or auto: flat up to 100,000 vectors.")
@click.option("--recall", "target_recall", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="For ivf: the recall@10 against exact search to tune nprobe to.")
@click.option("--neighbours", type=click.IntRange(min=1), default=None,
              help="Also write the top-K neighbour table of every galaxy (resumable: rerun to continue).")
@click.option("--chunk", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Galaxies per chunk of the neighbour table.")
def index(embeddings: tuple[Path, ...], out: Path, column: str, metric: str, kind: str, target_recall: float,
          neighbours: int | None, chunk: int) -> None:
    """Build a similarity-search index of EMBEDDINGS tables (galmoco embed output; several are joined).

    An existing index in OUT with a partial neighbour table is resumed (the index is not rebuilt)
    when --neighbours is given again with the same K and --chunk.
    """
    import json

    info = out / "info.json"
    if not (neighbours and info.is_file() and (out / "neighbours" / "settings.json").is_file()):
        build_index(list(embeddings), out, column, metric, kind, target_recall)
    built = json.loads(info.read_text())
    click.echo(f"wrote {out}: {built['kind']} index of {built['n']:,} vectors, {built['metric']}, "
               f"recall@10 {built['recall_at_10']}")
    if neighbours:
        click.echo(f"wrote {neighbour_table(out, neighbours, chunk)}")


def _radec(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        ra, dec = (float(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'RA DEC' in degrees", param_hint="--radec") from None
    return ra, dec


@click.command("search")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--id", "ids", multiple=True, help="A catalogue id to find similar galaxies of (repeatable).")
@click.option("--radec", help="'RA DEC' in degrees: the indexed galaxy nearest to it (within --radius).")
@click.option("--radius", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Matching radius for --radec in arcsec.")
@click.option("--fits", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A FITS cutout (or DESaccess folder) to embed and search with (repeatable).")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path),
              help="Model for --fits [default: the one the indexed embeddings came from].")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neighbours per query.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table (.csv, .fits, .ecsv, .parquet, .h5).")
@click.option("--gallery", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG gallery of the queries and their neighbours (needs the stores).")
@click.option("--device", default="auto", show_default=True, help="Where --fits cutouts are embedded.")
def search(index_dir: Path, ids: tuple[str, ...], radec: str | None, radius: float, fits: tuple[Path, ...],
           checkpoint: Path | None, k: int, out: Path | None, gallery: Path | None, device: str) -> None:
    """The K most similar galaxies in INDEX_DIR (galmoco index) to galaxies given by id, position or FITS."""
    if not (ids or radec or fits):
        raise GalmocoError("nothing to search for: give --id, --radec or --fits")
    table, images = run_search(index_dir, ids, _radec(radec), radius, fits, checkpoint, k, device)
    shown = table.copy()
    shown["distance"].info.format = ".4g"
    click.echo("\n".join(shown.pformat(max_lines=-1, max_width=-1)))
    if out is not None:
        from galmoco.io.tables import write_table

        click.echo(f"wrote {write_table(table, out)}")
    if gallery is not None:
        click.echo(f"wrote {neighbour_gallery_png(index_dir, table, gallery, images)}")
