"""One self-contained HTML report comparing training runs (figures embedded as base64 PNG).

Sections (HTML ids): ``config``, ``training``, ``placement``, ``reconstruction``, ``probes``,
``neighbours``, ``latent-map``. Per run it reads the analysis files of :mod:`galmoco.analysis.rundir`
and, given the dataset, computes what is missing (and stores it in the run dir for next time). Given the
packed store of a second observation of the same objects, placement also ranks each galaxy's second
observation among the first ones (row ``observed_again``). The placement section breaks the rank-1
fractions down by magnitude and stamp S/N (:func:`galmoco.analysis.placement_tables.placement_breakdown`).
The tables are also written next to the HTML as ``<stem>_placement.csv``,
``<stem>_placement_breakdown.csv``, ``<stem>_reconstruction.csv`` and ``<stem>_probes.csv`` (a ``run``
column names the run); figures as PNG + PDF under ``<stem>_files/``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from galmoco.analysis import plots
from galmoco.analysis.neighbours import nearest_neighbours, pick_queries
from galmoco.analysis.placement_tables import breakdown_pivot, placement_breakdown
from galmoco.analysis.reconstruction import reconstruction_examples
from galmoco.analysis.rundir import (
    default_probe_columns,
    ensure_embeddings,
    ensure_placement,
    ensure_probes,
    ensure_reconstruction,
)
from galmoco.config import load_config
from galmoco.distributed import resolve_device
from galmoco.embed import load_checkpoint_model, model_contract
from galmoco.errors import GalmocoError
from galmoco.files import atomic_write_text
from galmoco.io.store import CutoutStore, read_store_contract
from galmoco.io.tables import read_table, write_table

__all__ = ["SECTIONS", "build_report"]

SECTIONS = {
    "config": "Configuration", "training": "Training curves", "placement": "Similarity placement",
    "reconstruction": "Reconstruction", "probes": "Probes", "neighbours": "Nearest neighbours",
    "latent-map": "Latent space map",
}
_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
          "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
          "img{max-width:100%}pre{background:#f5f5f5;padding:0.5em;font-size:0.8em;overflow:auto}"
          ".runs{display:flex;gap:1em;flex-wrap:wrap}.runs>div{flex:1;min-width:300px}")


def _img(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(png.stem)}">'


def _table_html(table: Table) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float | np.floating) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.colnames)
    body = "".join("<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in table.colnames) + "</tr>"
                   for row in table)
    return f"<table><tr>{head}</tr>{body}</table>"


def _labelled(tables: dict[str, Table]) -> Table | None:
    """Stack per-run tables with a leading ``run`` column."""
    parts = []
    for label, t in tables.items():
        t = Table(t, copy=True)
        t.add_column([label] * len(t), name="run", index=0)
        parts.append(t)
    return vstack(parts, metadata_conflicts="silent") if parts else None


def _missing(what: str) -> str:
    return f"<p><em>{html.escape(what)} not available: give the dataset (--dataset) to compute it.</em></p>"


def build_report(
    run_dirs: Sequence[str | Path],
    out_html: str | Path,
    store: str | Path | None = None,
    labels: Sequence[str] | None = None,
    metric: str = "l1",
    probe_columns: Sequence[str] | None = None,
    colour_column: str | None = None,
    n_examples: int = 4,
    n_queries: int = 4,
    n_neighbours: int = 6,
    exclude_column: str | None = None,
    exclude_value: str | None = None,
    device: str = "auto",
    seed: int = 0,
    observed_again: str | Path | None = None,
) -> Path:
    """Write the comparison report of one or more runs.

    Args:
        run_dirs: training run directories (``config.yaml``, ``metrics.csv``, ``checkpoints/last.pt``).
        out_html: the HTML file to write.
        store: the packed dataset; needed for reconstructions and galleries and to compute missing
            embeddings, placement and probes.
        labels: run names (default: the folder names).
        metric: placement and neighbour distance, ``"l1"``, ``"l2"`` or ``"cosine"``.
        probe_columns: catalogue columns to probe (default: every truth column of the catalogue).
        colour_column: catalogue column colouring the latent map (default: the first probe column).
        n_examples: galaxies in the reconstruction grid; n_queries, n_neighbours: gallery size.
        exclude_column, exclude_value: leave rows with this value out of placement (e.g. class empty).
        device: where models run.
        seed: choice of example galaxies.
        observed_again: packed store of a second observation of the same objects (same ids): adds the
            ``observed_again`` placement row.

    Returns:
        The HTML path.
    """
    runs, labels = _checked_runs(run_dirs, labels)
    out_html = Path(out_html)
    fig_dir = out_html.parent / f"{out_html.stem}_files"
    body: dict[str, list[str]] = {key: [] for key in SECTIONS}
    _training_section(labels, runs, fig_dir, body)
    exclude = {"exclude_column": exclude_column, "exclude_value": exclude_value}
    _results_sections(labels, runs, out_html, fig_dir, body, metric, store, device, observed_again,
                      probe_columns, exclude)
    if store is not None:
        dev = resolve_device(device)
        with CutoutStore(store) as data:
            n, bands = len(data), data.bands
        rng = np.random.default_rng(seed)
        examples = np.sort(rng.choice(n, size=min(n_examples, n), replace=False))
        for label, r in zip(labels, runs, strict=True):
            model = load_checkpoint_model(r, dev)
            model_contract(model).check(read_store_contract(store), str(store), str(r))
            _run_figures(label, r, model, store, bands, examples, fig_dir, body, metric, colour_column,
                         probe_columns, n_queries, n_neighbours, seed)
    else:
        for key in ("reconstruction", "neighbours", "latent-map"):
            body[key].append(_missing("Stamps"))

    sections = "".join(
        f'<section id="{key}"><h2>{title}</h2><div class="runs">{"".join(body[key])}</div></section>'
        for key, title in SECTIONS.items())
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>galmoco report</title>"
            f"<style>{_STYLE}</style></head><body><h1>galmoco report: {html.escape(', '.join(labels))}</h1>"
            f"<p>Placement metric: {metric}. Stamps and reconstructions are shown in the network's "
            f"normalised space (Lupton RGB, i/r/g as R/G/B); neighbour galleries show raw flux.</p>"
            f"{sections}</body></html>")
    return atomic_write_text(out_html, page)


def _checked_runs(run_dirs: Sequence[str | Path],
                  labels: Sequence[str] | None) -> tuple[list[Path], list[str]]:
    """The run directories (each must hold ``config.yaml``) and their distinct labels.

    Raises:
        GalmocoError: naming the folder that is no run, or the labels that do not fit.
    """
    runs = [Path(r) for r in run_dirs]
    for r in runs:
        if not (r / "config.yaml").is_file():
            raise GalmocoError(f"{r}: not a run directory (no config.yaml)")
    labels = list(labels) if labels else [r.name for r in runs]
    if len(labels) != len(runs) or len(set(labels)) != len(labels):
        raise GalmocoError(f"--labels needs {len(runs)} distinct names, got {labels}")
    return runs, labels


def _training_section(labels: list[str], runs: list[Path], fig_dir: Path, body: dict[str, list[str]]) -> None:
    """Each run's configuration and the training curves of those with a ``metrics.csv``."""
    metrics = {}
    for label, r in zip(labels, runs, strict=True):
        body["config"].append(f"<div><h3>{html.escape(label)}</h3><pre>"
                              f"{html.escape((r / 'config.yaml').read_text())}</pre></div>")
        if (r / "metrics.csv").is_file():
            metrics[label] = Table.read(r / "metrics.csv", format="ascii.csv")
    body["training"].append(_img(plots.training_curves(metrics, fig_dir / "training")) if metrics
                            else _missing("metrics.csv"))


def _results_sections(labels: list[str], runs: list[Path], out_html: Path, fig_dir: Path,
                      body: dict[str, list[str]], metric: str, store: str | Path | None, device: str,
                      observed_again: str | Path | None, probe_columns: Sequence[str] | None,
                      exclude: dict[str, str | None]) -> None:
    """Placement (with its breakdowns), probes and reconstruction of every run, as tables in the page
    and CSV files beside it (computed where missing or stale, see :mod:`galmoco.analysis.rundir`)."""
    placement, summaries, probes, recon = {}, {}, {}, {}
    for label, r in zip(labels, runs, strict=True):
        found = ensure_placement(r, metric, store, device, observed_again=observed_again, **exclude)
        if found is not None:
            placement[label], summaries[label] = found
        table = ensure_probes(r, probe_columns, store, device)
        if table is not None:
            probes[label] = table
        table = ensure_reconstruction(r, store, device=device)  # the run's own mask settings
        if table is not None:
            recon[label] = table
    csvs = {"placement": _labelled(summaries), "reconstruction": _labelled(recon),
            "probes": _labelled(probes)}
    for key, table in csvs.items():
        if table is not None:
            write_table(table, out_html.parent / f"{out_html.stem}_{key}.csv")
            body[key].append(_table_html(table))
        else:
            body[key].append(_missing(f"{SECTIONS[key]} results"))
    if placement:
        body["placement"].append(_img(plots.placement_histograms(placement, fig_dir / f"placement_{metric}")))
        breakdowns = {label: placement_breakdown(ranks) for label, ranks in placement.items()}
        _breakdown_section(breakdowns, out_html, fig_dir, body)


def _breakdown_section(breakdowns: dict[str, Table], out_html: Path, fig_dir: Path,
                       body: dict[str, list[str]]) -> None:
    """Rank-1 fractions by brightness bin: the CSV beside the report, a figure and one table per column."""
    table = _labelled(breakdowns)
    if table is None or not len(table):
        return
    write_table(table, out_html.parent / f"{out_html.stem}_placement_breakdown.csv")
    parts = [_img(plots.breakdown_plot(breakdowns, fig_dir / "placement_breakdown"))]
    for label, breakdown in breakdowns.items():
        for column in dict.fromkeys(breakdown["column"]):
            parts.append(f"<h4>{html.escape(label)}: fraction ranked first by {html.escape(column)}</h4>"
                         + _table_html(breakdown_pivot(breakdown, column)))
    body["placement"].append("<div>" + "".join(parts) + "</div>")


def _run_figures(label, run_dir, model, store, bands, examples, fig_dir, body, metric, colour_column,
                 probe_columns, n_queries, n_neighbours, seed) -> None:
    """Reconstruction grid, neighbour gallery and latent map of one run, appended to ``body``."""
    title = html.escape(label)
    if getattr(model, "decoder", True) is not None:
        ex = reconstruction_examples(model, store, examples, load_config(run_dir / "config.yaml").mask)
        grid = plots.reconstruction_grid(ex, fig_dir / f"recon_{label}", label, bands)
        per_band = plots.reconstruction_bands(ex, bands, fig_dir / f"bands_{label}")
        body["reconstruction"].append(f"<div><h3>{title}</h3>{_img(grid)}{_img(per_band)}</div>")
    emb_path = ensure_embeddings(run_dir, store)
    table = read_table(emb_path)
    latent = np.asarray(table["latent"])
    queries = pick_queries(len(table), n_queries, seed)
    idx, dist = nearest_neighbours(latent, queries, min(n_neighbours, len(table) - 1), metric)
    with CutoutStore(store) as data:
        q_img = data.read_batch(queries)
        nb_img = data.read_batch(idx.reshape(-1)).reshape(*idx.shape, *q_img.shape[1:])
    ids = np.asarray(table["id"]).astype(str)[queries]
    body["neighbours"].append(f"<div><h3>{title}</h3>" + _img(plots.neighbour_gallery(
        q_img, nb_img, ids, dist, fig_dir / f"neighbours_{label}", f"{label}: nearest neighbours ({metric})",
        bands))
        + "</div>")
    candidates = [colour_column] if colour_column else list(probe_columns or default_probe_columns(table))
    column = next((c for c in candidates if c in table.colnames), None)
    colour = np.asarray(table[column]) if column else np.zeros(len(table))
    body["latent-map"].append(f"<div><h3>{title}</h3>" + _img(plots.latent_map(
        latent, colour, column or "none", fig_dir / f"latent_{label}", label, seed)) + "</div>")
