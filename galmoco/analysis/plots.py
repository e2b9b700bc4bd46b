"""Figures of the analysis (matplotlib Agg), each saved as PNG and PDF.

Colour stamps use the asinh stretch of Lupton et al. (2004, PASP 116, 133) via
``astropy.visualization.make_lupton_rgb`` with the three reddest bands as R, G, B (``griz`` -> i, r, g).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402
from astropy.visualization import make_lupton_rgb  # noqa: E402

from galmoco.analysis.placement_tables import OBSERVED_AGAIN, rank_columns  # noqa: E402
from galmoco.analysis.probes import is_categorical  # noqa: E402
from galmoco.data.transforms import TRANSFORMS  # noqa: E402
from galmoco.files import atomic_output  # noqa: E402

__all__ = [
    "breakdown_plot",
    "latent_map",
    "lupton_rgb",
    "neighbour_gallery",
    "placement_bins",
    "placement_histograms",
    "reconstruction_bands",
    "reconstruction_grid",
    "rgb_band_order",
    "save_figure",
    "training_curves",
]

#: ranks up to this get one bin each; beyond, bins are log-spaced
EXACT_RANKS = 10


def save_figure(fig: plt.Figure, stem: str | Path) -> Path:
    """Save ``stem.png`` (150 dpi) and ``stem.pdf`` atomically, close the figure, return the PNG path."""
    stem = Path(stem)
    for suffix in (".png", ".pdf"):
        with atomic_output(stem.with_suffix(suffix)) as tmp:
            fig.savefig(tmp, dpi=120)
        # the layout the PNG was drawn with holds for the PDF: solving it again doubles the cost
        fig.set_layout_engine("none")
    plt.close(fig)
    return stem.with_suffix(".png")


def lupton_rgb(images: np.ndarray, stretch: float | None = None, q: float = 8.0,
               bands: Sequence[str] | None = None) -> np.ndarray:
    """Lupton asinh colour images of ``(K, B, H, W)`` stamps; one stretch for all so they compare.

    Args:
        images: stamps; with fewer than 3 bands the reddest is repeated.
        stretch: linear range of the asinh (default: the 99.5th percentile of the stamps).
        q: asinh softening.
        bands: the stamps' band names in their order (e.g. a store's ``bands``): g, r, i (or the three
            bluest) become blue, green, red whatever that order (:func:`rgb_band_order`). ``None``: the
            stamps are already ordered blue to red.

    Returns:
        ``(K, H, W, 3)`` uint8.
    """
    if bands is not None:
        images = images[:, rgb_band_order(bands)]
    b = images.shape[1]
    red, green, blue = (images[:, min(i, b - 1)] for i in (2, 1, 0))
    if stretch is None:
        stretch = max(float(np.percentile(images, 99.5)), 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides by the intensity of black pixels
        return np.stack([make_lupton_rgb(r, g, bl, minimum=0.0, stretch=stretch, Q=q)
                         for r, g, bl in zip(red, green, blue, strict=True)])


def rgb_band_order(bands: Sequence[str]) -> list[int]:
    """Indices of a store's bands to give :func:`lupton_rgb` (blue to red): g, r, i when all are there,
    else the first three in wavelength order (fewer when the store has fewer bands).

    Args:
        bands: the store's band names in store order, e.g. ``"griz"`` or ``("r", "i", "g", "z")``.

    Returns:
        Positions into ``bands``, bluest first.
    """
    bands = list(bands)
    if {"g", "r", "i"} <= set(bands):
        return [bands.index(b) for b in "gri"]
    by_wavelength = sorted(range(len(bands)), key=lambda k: "ugrizy".find(bands[k]))
    return by_wavelength[:3]


def placement_bins(n: int) -> np.ndarray:
    """Bin edges for ranks ``1..n``: one bin per rank up to :data:`EXACT_RANKS`, then log-spaced."""
    exact = np.arange(0.5, min(n, EXACT_RANKS) + 1.0)
    if n <= EXACT_RANKS:
        return exact
    tail = np.geomspace(exact[-1], n + 0.5, max(2, int(4 * np.log10(n / EXACT_RANKS)) + 2))
    return np.concatenate([exact, np.unique(np.round(tail[1:]) + 0.5)])


def placement_histograms(ranks: Mapping[str, Table], stem: str | Path) -> Path:
    """One panel per transform, one step histogram per run: the fraction of copies in each rank bin.

    Args:
        ranks: run label -> placement rank table (``id`` + one column per transform).
        stem: output path without suffix.
    """
    transforms = list(dict.fromkeys(c for t in ranks.values() for c in rank_columns(t)))
    n = max(len(t) for t in ranks.values())
    edges = placement_bins(n)
    cols = min(4, len(transforms))
    rows = -(-len(transforms) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    for ax, name in zip(axes.flat, transforms, strict=False):
        for label, table in ranks.items():
            if name in table.colnames:
                r = np.asarray(table[name])
                r = r[r > 0]  # 0: not observed again
                frac = np.histogram(r, edges)[0] / len(r)
                ax.stairs(frac, edges, label=f"{label} ({np.mean(r == 1):.1%} first)", linewidth=1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("placement rank")
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of copies per bin")
    for ax in list(axes.flat)[len(transforms):]:
        ax.set_visible(False)
    fig.suptitle(f"Similarity placement: ranks 1-{EXACT_RANKS} one bin each, log-spaced beyond")
    return save_figure(fig, stem)


def _mean_finite(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


def breakdown_plot(breakdowns: Mapping[str, Table], stem: str | Path) -> Path:
    """Rank-1 fraction per bin of each breakdown column (one panel each), one line per run and group:
    the seven D4 transforms (mean), the other turns (mean) and the second observation.

    Args:
        breakdowns: run label -> :func:`~galmoco.analysis.placement_tables.placement_breakdown` table.
        stem: output path without suffix.
    """
    columns = list(dict.fromkeys(c for t in breakdowns.values() for c in t["column"]))
    panels = max(1, len(columns))
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 3.4), squeeze=False, layout="constrained")
    groups = {"D4": lambda t: t in TRANSFORMS,
              "turns": lambda t: t not in TRANSFORMS and t != OBSERVED_AGAIN,
              "observed again": lambda t: t == OBSERVED_AGAIN}
    styles = ("-", "--", ":", "-.")
    for ax, column in zip(axes[0], columns, strict=False):
        for i, (label, table) in enumerate(breakdowns.items()):
            part = table[table["column"] == column]
            bins = list(dict.fromkeys(part["bin"]))
            for g, (group, member) in enumerate(groups.items()):
                rows = part[[member(str(t)) for t in part["transform"]]]
                if len(rows):
                    means = [_mean_finite(rows["frac_rank1"][rows["bin"] == b]) for b in bins]
                    ax.plot(bins, means, styles[g % len(styles)], marker="o", color=f"C{i}",
                            label=f"{label}: {group}")
        ax.set_xlabel(column)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("fraction ranked first")
        ax.legend(fontsize=7)
    fig.suptitle("Where invariance holds: rank-1 fraction by brightness")
    return save_figure(fig, stem)


def reconstruction_grid(examples: Mapping[str, np.ndarray], stem: str | Path, title: str = "",
                        bands: Sequence[str] | None = None) -> Path:
    """Rows of galaxies; columns original, reconstruction (Lupton RGB, shared stretch), residual, sky.

    The stamps are in the network's normalised space (the space of the loss); the residual is
    reconstruction - original summed over bands, on a symmetric colour scale. ``bands``: the stamps'
    band names, for the colours (:func:`lupton_rgb`).
    """
    orig, recon, resid, sky = (examples[k] for k in ("original", "reconstruction", "residual", "sky"))
    stretch = max(float(np.percentile(orig, 99.5)), 1e-6)
    rgb_o, rgb_r = lupton_rgb(orig, stretch, bands=bands), lupton_rgb(recon, stretch, bands=bands)
    res = resid.sum(1)
    lim = max(float(np.percentile(np.abs(res), 99)), 1e-6)
    k = len(orig)
    fig, axes = plt.subplots(k, 4, figsize=(7.2, 1.85 * k), squeeze=False,
                             layout="constrained")
    for i in range(k):
        axes[i, 0].imshow(rgb_o[i], origin="lower")
        axes[i, 1].imshow(rgb_r[i], origin="lower")
        im = axes[i, 2].imshow(res[i], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[i, 3].imshow(sky[i], origin="lower", cmap="gray", vmin=0, vmax=1)
    for ax, head in zip(axes[0], ("original", "reconstruction", "residual (band sum)", "sky (white)"),
                        strict=True):
        ax.set_title(head, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 2].tolist(), shrink=0.6, label="normalised units")
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)


def reconstruction_bands(examples: Mapping[str, np.ndarray], bands: Sequence[str], stem: str | Path,
                         title: str = "") -> Path:
    """Per band: original, reconstruction and residual of each galaxy (normalised space)."""
    orig, recon, resid = examples["original"], examples["reconstruction"], examples["residual"]
    k, b = orig.shape[:2]
    fig, axes = plt.subplots(k, 3 * b, figsize=(1.3 * 3 * b, 1.4 * k), squeeze=False,
                             layout="constrained")
    for j, band in enumerate(bands):
        vmin, vmax = np.percentile(orig[:, j], [1, 99.5])
        lim = max(float(np.percentile(np.abs(resid[:, j]), 99)), 1e-6)
        for i in range(k):
            axes[i, 3 * j].imshow(orig[i, j], origin="lower", cmap="magma", vmin=vmin, vmax=vmax)
            axes[i, 3 * j + 1].imshow(recon[i, j], origin="lower", cmap="magma", vmin=vmin, vmax=vmax)
            axes[i, 3 * j + 2].imshow(resid[i, j], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        for c, head in enumerate(("orig", "recon", "resid")):
            axes[0, 3 * j + c].set_title(f"{band} {head}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)


def neighbour_gallery(query_images: np.ndarray, neighbour_images: np.ndarray, query_ids: Sequence[str],
                      distances: np.ndarray, stem: str | Path, title: str = "",
                      bands: Sequence[str] | None = None) -> Path:
    """One row per query: the query, then its neighbours nearest first (raw flux, Lupton RGB per row).

    Args:
        query_images: ``(Q, B, H, W)`` raw store images.
        neighbour_images: ``(Q, k, B, H, W)``.
        query_ids: ids shown on the left.
        distances: ``(Q, k)`` latent distances, printed above each neighbour.
        bands: the stamps' band names, for the colours (:func:`lupton_rgb`).
    """
    q, k = neighbour_images.shape[:2]
    fig, axes = plt.subplots(q, k + 1, figsize=(1.35 * (k + 1), 1.5 * q), squeeze=False,
                             layout="constrained")
    for i in range(q):
        row = np.concatenate([query_images[i:i + 1], neighbour_images[i]])
        rgb = lupton_rgb(row, stretch=max(float(np.percentile(query_images[i], 99.5)), 1e-6), bands=bands)
        for j in range(k + 1):
            axes[i, j].imshow(rgb[j], origin="lower")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j:
                axes[i, j].set_title(f"{distances[i, j - 1]:.3g}", fontsize=7)
        axes[i, 0].set_ylabel(str(query_ids[i]), fontsize=7)
    axes[0, 0].set_title("query", fontsize=8)
    fig.suptitle(title or "Nearest neighbours in latent space (distance above)")
    return save_figure(fig, stem)


def _embed_2d(latent: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA

    out = {"PCA": PCA(2, random_state=seed).fit_transform(latent)}
    try:
        import umap  # optional: pip install umap-learn
    except ImportError:
        return out
    out["UMAP"] = umap.UMAP(random_state=seed).fit_transform(latent)
    return out


def latent_map(latent: np.ndarray, colour: np.ndarray, colour_name: str, stem: str | Path,
               title: str = "", seed: int = 0) -> Path:
    """2-D map of the latent space (PCA; also UMAP when ``umap-learn`` is installed) coloured by a column."""
    maps = _embed_2d(np.asarray(latent, dtype=np.float64), seed)
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4), squeeze=False, layout="constrained")
    for ax, (method, xy) in zip(axes[0], maps.items(), strict=True):
        if is_categorical(colour):
            for value in np.unique(colour):
                sel = colour == value
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, label=str(value), alpha=0.7)
            ax.legend(title=colour_name, fontsize=7, markerscale=2)
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=6, c=np.asarray(colour, float), cmap="viridis")
            fig.colorbar(sc, ax=ax, label=colour_name)
        ax.set_title(method)
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)


def training_curves(metrics: Mapping[str, Table], stem: str | Path) -> Path:
    """Loss terms (and kNN accuracy when logged) against epoch, one line per run."""
    panels = [c for c in ("loss", "loss_contrastive", "loss_recon", "knn_acc")
              if any(c in t.colnames and np.isfinite(_as_float(t[c])).any() for t in metrics.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3), squeeze=False,
                             layout="constrained")
    for ax, col in zip(axes[0], panels, strict=True):
        for label, table in metrics.items():
            if col in table.colnames:
                y = _as_float(table[col])
                ok = np.isfinite(y)
                ax.plot(np.asarray(table["epoch"], float)[ok], y[ok], marker=".", label=label)
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _as_float(column) -> np.ndarray:
    """A metrics.csv column as floats, NaN where empty or masked (knn_acc is empty without labels)."""
    raw = np.ma.getdata(column)
    if raw.dtype.kind in "USO":
        vals = np.array([float(v) if str(v).strip() not in ("", "--", "nan") else np.nan for v in raw])
    else:
        vals = raw.astype(float)
    return np.where(np.ma.getmaskarray(column), np.nan, vals)
