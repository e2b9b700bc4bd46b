"""The files the analysis keeps in a training run directory, read when present and computed when not.

```
RUN_DIR/embeddings.parquet        galmoco embed (with --transforms); .fits/.h5 are found too
RUN_DIR/placement_ranks.fits      galmoco placement: id + one rank column per transform (meta METRIC)
RUN_DIR/placement_summary.csv     galmoco placement: one row per transform (placement_summary)
RUN_DIR/placement_breakdown.csv   galmoco placement: rank-1 fraction by magnitude and stamp S/N bins
RUN_DIR/embeddings_observed_again.parquet  the run's embeddings of a second observation (report)
RUN_DIR/probes.csv                galmoco probe
RUN_DIR/reconstruction.csv        masked reconstruction error (one row: source_mse, sky_mse, ...)
```

Each product gets a key file beside it (``<product>.key.json``, :mod:`galmoco.cachekey`): the inputs
it was computed from (the checkpoint's SHA-256, the store's :func:`~galmoco.io.store.store_fingerprint`,
the embeddings file's size and mtime, the options). A product is reused only when its key matches the
inputs of this call, and recomputed otherwise (after ``train --resume``, another store, metric,
exclusion, probe columns or mask settings). A product without a key (``galmoco placement``/``probe``
output, or an older galmoco's) is reused only when it cannot be recomputed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.analysis.placement_tables import (
    OBSERVED_AGAIN,
    placement_breakdown,
    placement_summary,
    placement_table,
)
from galmoco.analysis.probes import run_probes
from galmoco.cachekey import file_sha256, is_current, keyed_output
from galmoco.config import load_config
from galmoco.data.masks import MaskConfig
from galmoco.embed import embed_store, embeddings_key
from galmoco.errors import GalmocoError
from galmoco.io.store import store_fingerprint
from galmoco.io.tables import VECTOR_TABLE_SUFFIXES, read_table, write_table

__all__ = [
    "EMBEDDINGS", "EMBEDDINGS_AGAIN", "PHYSICAL_COLUMNS", "PLACEMENT_BREAKDOWN", "PLACEMENT_RANKS",
    "PLACEMENT_SUMMARY", "PROBES", "RECONSTRUCTION",
    "default_probe_columns", "ensure_embeddings", "ensure_placement", "ensure_probes",
    "ensure_reconstruction", "exclude_rows", "find_embeddings", "write_placement",
]

EMBEDDINGS = "embeddings.parquet"
PLACEMENT_RANKS = "placement_ranks.fits"
PLACEMENT_SUMMARY = "placement_summary.csv"
PLACEMENT_BREAKDOWN = "placement_breakdown.csv"
EMBEDDINGS_AGAIN = "embeddings_observed_again.parquet"
PROBES = "probes.csv"
RECONSTRUCTION = "reconstruction.csv"
#: what the latent space should know about a galaxy (columns of the simulator's truth catalogue):
#: orientation-free quantities only, since the latent is meant not to change when the galaxy turns
#: (|e|, not e1/e2 or the position angle)
PHYSICAL_COLUMNS = ("class", "hlr_arcsec", "sersic_n", "bulge_frac", "ellipticity", "mag_i", "n_clumps")
#: catalogue bookkeeping columns that are never probe targets
_NOT_PROBED = ("id", "ra", "dec", "source", "n_bad_pixels", "padded")


def _embeddings_file(path: Path) -> dict[str, int]:
    """What identifies an embeddings file for the products computed from it: its size and mtime (a
    re-embedding rewrites it atomically, so both change)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def find_embeddings(run_dir: str | Path) -> Path | None:
    """``RUN_DIR/embeddings.<parquet|fits|h5|hdf5>``, the first that exists, else None."""
    for suffix in VECTOR_TABLE_SUFFIXES:
        path = Path(run_dir) / f"embeddings{suffix}"
        if path.is_file():
            return path
    return None


def ensure_embeddings(
    run_dir: str | Path, store: str | Path | None = None, device: str = "auto"
) -> Path | None:
    """The run's embeddings table; embedded now (with the placement transforms) when ``store`` is given
    and the table is missing or was computed from another checkpoint or store."""
    found = find_embeddings(run_dir)
    if store is None:
        return found
    if found is not None and is_current(found, embeddings_key(run_dir, store, transforms=True)):
        return found
    # EMBEDDINGS (.parquet) is what find_embeddings finds first, so a stale .fits/.h5 stays unused;
    # embed_store records its key beside it
    return embed_store(run_dir, store, Path(run_dir) / EMBEDDINGS, transforms=True, device=device)


def exclude_rows(table: Table, column: str | None, value: str | None) -> np.ndarray | None:
    """Rows where ``column == value`` (compared as strings), e.g. ``class == "empty"``; None when unset."""
    if column is None:
        return None
    if column not in table.colnames:
        raise GalmocoError(f"--exclude-column {column!r} is not a column of the embeddings table")
    return np.asarray(table[column]).astype(str) == str(value)


def write_placement(
    embeddings: Table, out_dir: str | Path, metric: str = "l1", transforms: Sequence[str] | None = None,
    exclude_column: str | None = None, exclude_value: str | None = None, chunk: int | None = None,
    space: str = "latent", observed_again: Table | None = None, breakdown_column: str | None = None,
    breakdown_edges: Sequence[float] | None = None,
) -> tuple[Table, Table]:
    """Rank every transform (and a second observation) and write ``placement_ranks.fits``,
    ``placement_summary.csv`` and ``placement_breakdown.csv`` to ``out_dir``.

    Returns:
        ``(ranks, summary)`` tables (see :mod:`galmoco.analysis.placement_tables`); ``ranks.meta["join"]``
        reports the id join of a second observation.
    """
    exclude = exclude_rows(embeddings, exclude_column, exclude_value)
    carry = [breakdown_column] if breakdown_column else []
    ranks = placement_table(embeddings, metric, transforms, exclude, chunk, space, observed_again, carry)
    summary = placement_summary(ranks)
    breakdown = placement_breakdown(ranks, breakdown_column, breakdown_edges)
    join = ranks.meta.get("join")
    # short keys: FITS header cards
    ranks.meta = {"METRIC": metric, "SPACE": space, "NEXCL": ranks.meta["n_excluded"]}
    write_table(ranks, Path(out_dir) / PLACEMENT_RANKS)
    write_table(summary, Path(out_dir) / PLACEMENT_SUMMARY)
    write_table(breakdown, Path(out_dir) / PLACEMENT_BREAKDOWN)
    if join:
        ranks.meta["join"] = join
    return ranks, summary


def ensure_placement(run_dir: str | Path, metric: str = "l1", store: str | Path | None = None,
                     device: str = "auto", observed_again: str | Path | None = None,
                     **kwargs) -> tuple[Table, Table] | None:
    """Placement of a run with ``metric`` and the options of :func:`write_placement`: read when computed
    from the current embeddings with these options, else computed if possible. Given the packed store of
    a second observation ``observed_again``, its row too (the second observation embedded into
    ``RUN_DIR/embeddings_observed_again.parquet``, kept while its checkpoint and store are the same)."""
    run_dir = Path(run_dir)
    ranks_path, summary_path = run_dir / PLACEMENT_RANKS, run_dir / PLACEMENT_SUMMARY
    emb = ensure_embeddings(run_dir, store, device)
    again_path = run_dir / EMBEDDINGS_AGAIN
    if observed_again is not None and emb is not None:
        again_key = embeddings_key(run_dir, observed_again, transforms=False)
        if not is_current(again_path, again_key):
            embed_store(run_dir, observed_again, again_path, device=device)
    # every option that changes the ranks, defaults included (chunk changes memory use only)
    options = {name: kwargs.get(name) for name in ("transforms", "exclude_column", "exclude_value")}
    key = None if emb is None else {
        "embeddings": _embeddings_file(emb), "metric": metric, **options,
        "observed_again": None if observed_again is None else _embeddings_file(again_path)}
    if ranks_path.is_file() and summary_path.is_file() and (key is None or is_current(ranks_path, key)):
        summary = Table.read(summary_path, format="ascii.csv")
        if (len(summary) and str(summary["metric"][0]) == metric
                and (observed_again is None or OBSERVED_AGAIN in list(summary["transform"]))):
            return read_table(ranks_path), summary
    if emb is None:
        return None
    again = read_table(again_path) if observed_again is not None else None
    with keyed_output(ranks_path, key):
        return write_placement(read_table(emb), run_dir, metric, observed_again=again, **kwargs)


def default_probe_columns(table: Table) -> list[str]:
    """The physical parameters of the simulator's truth (:data:`PHYSICAL_COLUMNS`) that the table has;
    without any, every scalar column with at least two distinct values but the bookkeeping ones
    (id, ra, dec, source, ...) and vectors."""
    physical = [c for c in PHYSICAL_COLUMNS if c in table.colnames]
    if physical:
        return physical
    return [c for c in table.colnames
            if c not in _NOT_PROBED and table[c].ndim == 1 and not c.startswith(("latent", "projection"))
            and len(np.unique(np.asarray(table[c]))) >= 2]


def ensure_probes(run_dir: str | Path, columns: Sequence[str] | None = None, store: str | Path | None = None,
                  device: str = "auto") -> Table | None:
    """The run's ``probes.csv``; computed from its embeddings when missing or computed from other
    embeddings or ``columns`` (default columns: all truth)."""
    path = Path(run_dir) / PROBES
    emb = ensure_embeddings(run_dir, store, device)
    key = None if emb is None else {"embeddings": _embeddings_file(emb),
                                    "columns": list(columns) if columns else None}
    if path.is_file() and (key is None or is_current(path, key)):
        return Table.read(path, format="ascii.csv")
    if emb is None:
        return None
    table = read_table(emb)
    columns = list(columns) if columns else default_probe_columns(table)
    if not columns:
        return None
    probes = run_probes(table, columns=columns)
    with keyed_output(path, key):
        write_table(probes, path)
    return probes


def ensure_reconstruction(run_dir: str | Path, store: str | Path | None = None,
                          mask_config: MaskConfig | None = None, device: str = "auto") -> Table | None:
    """The run's ``reconstruction.csv``; computed when ``store`` is given and the table is missing or
    was computed from another checkpoint, store or mask settings.

    Args:
        run_dir: the run.
        store: the packed dataset.
        mask_config: which pixels are sky; None: the run's own (``config.yaml``), as in its training loss.
        device: where the model runs.

    Returns None without a store (and no table) or when the model has no decoder.
    """
    from galmoco.analysis.reconstruction import reconstruction_errors

    run_dir = Path(run_dir)
    path = run_dir / RECONSTRUCTION
    if store is None:
        return Table.read(path, format="ascii.csv") if path.is_file() else None
    mask_config = mask_config or load_config(run_dir / "config.yaml").mask
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise GalmocoError(f"{checkpoint}: checkpoint not found")
    key = {"checkpoint_sha256": file_sha256(checkpoint), "store": store_fingerprint(store),
           "mask": dataclasses.asdict(mask_config)}
    if is_current(path, key):
        return Table.read(path, format="ascii.csv")
    try:
        errors = reconstruction_errors(run_dir, store, mask_config, device=device)
    except GalmocoError as exc:
        if "no decoder" in str(exc):
            return None
        raise
    table = Table(rows=[errors])
    with keyed_output(path, key):
        write_table(table, path)
    return table
