"""``galmoco placement``, ``galmoco probe`` and ``galmoco report``: thin wrappers over galmoco.analysis.

EMBEDDINGS arguments take an embeddings table or a run directory (whose ``embeddings.*`` is used and
into which the results are written; see :mod:`galmoco.analysis.rundir`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from galmoco.analysis.placement import METRICS
from galmoco.analysis.placement_tables import MAG_EDGES, SPACES, breakdown_pivot, placement_breakdown
from galmoco.analysis.probes import run_probes
from galmoco.analysis.report import build_report
from galmoco.analysis.rundir import PLACEMENT_BREAKDOWN, PROBES, find_embeddings, write_placement
from galmoco.data.transforms import PLACEMENT_TRANSFORMS
from galmoco.errors import GalmocoError
from galmoco.io.tables import read_table, write_table

__all__ = ["placement", "probe", "report"]


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


_PLACEMENT = _defaults(write_placement)
_PROBES = _defaults(run_probes)
_REPORT = _defaults(build_report)


def _resolve(source: Path) -> tuple[Path, Path]:
    """(embeddings file, folder for the results) of a run directory or an embeddings file."""
    if source.is_dir():
        found = find_embeddings(source)
        if found is None:
            raise GalmocoError(f"{source}: no embeddings.* in this run directory; run `galmoco embed` first")
        return found, source
    return source, source.parent


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("placement")
@click.argument("embeddings", type=click.Path(exists=True, path_type=Path))
@click.option("--metric", type=click.Choice(METRICS), default=_PLACEMENT["metric"], show_default=True,
              help="Distance between latent vectors.")
@click.option("--transforms",
              help=f"Comma-separated subset of {','.join(PLACEMENT_TRANSFORMS)} [default: all present].")
@click.option("--space", type=click.Choice(SPACES), default=_PLACEMENT["space"], show_default=True,
              help="Rank the latent vectors or the projection head's output (embed --projection).")
@click.option("--observed-again", type=click.Path(exists=True, path_type=Path),
              help="Embeddings of a second observation of the same objects (table or run dir): rank each "
                   "one among all first observations, joined by id (row observed_again).")
@click.option("--breakdown-column", help="Catalogue column to bin the rank-1 fractions by [default: mag_r "
              "when present; always also stamp_snr].")
@click.option("--breakdown-edges", default=",".join(f"{e:g}" for e in MAG_EDGES), show_default=True,
              help="Comma-separated increasing bin edges of the breakdown column.")
@click.option("--exclude-column", help="Leave out rows whose COLUMN equals --exclude-value (e.g. class).")
@click.option("--exclude-value", help="Value of --exclude-column to leave out (e.g. empty).")
@click.option("--chunk", type=click.IntRange(min=1), help="Queries per block [default: ~128 MB per block].")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where placement_ranks.fits and placement_summary.csv go [default: the run dir, or the "
                   "embeddings file's folder].")
def placement(embeddings: Path, metric: str, transforms: str | None, space: str, observed_again: Path | None,
              breakdown_column: str | None, breakdown_edges: str, exclude_column: str | None,
              exclude_value: str | None, chunk: int | None, out_dir: Path | None) -> None:
    """Rank each transformed copy (and second observation) of every galaxy among all originals
    (EMBEDDINGS: table or run dir)."""
    if (exclude_column is None) != (exclude_value is None):
        raise click.UsageError("--exclude-column and --exclude-value go together")
    try:
        edges = [float(v) for v in breakdown_edges.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{breakdown_edges!r} is not a list of numbers",
                                 param_hint="--breakdown-edges") from None
    table_path, default_dir = _resolve(embeddings)
    again = read_table(_resolve(observed_again)[0]) if observed_again else None
    ranks, summary = write_placement(read_table(table_path), out_dir or default_dir, metric,
                                     _names(transforms), exclude_column, exclude_value, chunk, space, again,
                                     breakdown_column, edges)
    if "join" in ranks.meta:
        click.echo(f"observed again: {ranks.meta['join']}")
    summary.pprint(max_width=-1, max_lines=-1)
    breakdown = placement_breakdown(ranks, breakdown_column, edges)
    for column in dict.fromkeys(breakdown["column"]):
        click.echo(f"\nRank-1 fraction by {column} bin:")
        pivot = breakdown_pivot(breakdown, column)
        for name in pivot.colnames[1:]:
            pivot[name].format = ".3f"
        pivot.pprint(max_width=-1, max_lines=-1)
    click.echo(f"wrote {out_dir or default_dir}/placement_ranks.fits, placement_summary.csv and "
               f"{PLACEMENT_BREAKDOWN}")


@click.command("probe")
@click.argument("embeddings", type=click.Path(exists=True, path_type=Path))
@click.option("--columns", required=True, help="Comma-separated catalogue columns to predict.")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Truth table (FITS/CSV/parquet/HDF5) joined on id [default: the embeddings' own columns].")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=_PROBES["test_fraction"], show_default=True, help="Held-out share of the rows.")
@click.option("--seed", type=int, default=_PROBES["seed"], show_default=True, help="Seed of the split.")
@click.option("--latent-column", default=_PROBES["latent_column"], show_default=True,
              help="Vectors to probe (latent or projection).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output CSV [default: probes.csv in the run dir or beside the embeddings].")
def probe(embeddings: Path, columns: str, catalog: Path | None, test_fraction: float, seed: int,
          latent_column: str, out: Path | None) -> None:
    """Linear and kNN probes from latent vectors to catalogue columns (EMBEDDINGS: table or run dir)."""
    table_path, default_dir = _resolve(embeddings)
    truth = read_table(catalog) if catalog else None
    result = run_probes(read_table(table_path), truth, _names(columns), test_fraction, seed,
                        latent_column)
    result.pprint(max_width=-1, max_lines=-1)
    click.echo(f"wrote {write_table(result, out or default_dir / PROBES)}")


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file.")
@click.option("--dataset", "store", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Packed dataset: needed for stamps, and to compute missing embeddings/placement/probes.")
@click.option("--labels", help="Comma-separated run names [default: the folder names].")
@click.option("--metric", type=click.Choice(METRICS), default=_REPORT["metric"], show_default=True,
              help="Placement and neighbour distance.")
@click.option("--probe-columns", help="Comma-separated columns to probe [default: every truth column].")
@click.option("--colour-column", help="Column colouring the latent map [default: the first probe column].")
@click.option("--exclude-column", help="Leave rows with COLUMN == --exclude-value out of placement.")
@click.option("--exclude-value", help="Value of --exclude-column to leave out (e.g. empty).")
@click.option("--observed-again", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Packed dataset of a second observation of the same objects: adds the observed_again "
                   "placement row (each run embeds it).")
@click.option("--device", default=_REPORT["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
def report(run_dirs: tuple[Path, ...], out: Path, store: Path | None, labels: str | None, metric: str,
           probe_columns: str | None, colour_column: str | None, exclude_column: str | None,
           exclude_value: str | None, observed_again: Path | None, device: str) -> None:
    """One self-contained HTML report comparing RUN_DIRS (tables also as CSV next to it)."""
    path = build_report(run_dirs, out, store=store, labels=_names(labels), metric=metric,
                        probe_columns=_names(probe_columns), colour_column=colour_column,
                        exclude_column=exclude_column, exclude_value=exclude_value, device=device,
                        observed_again=observed_again)
    click.echo(f"wrote {path}")
