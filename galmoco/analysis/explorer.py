"""An interactive latent-space explorer: one self-contained HTML page (Bokeh, no server).

The page shows the 2-D map of the latent space (UMAP when ``umap-learn`` is installed, else PCA)
coloured by a catalogue column, a Lupton RGB thumbnail (Lupton et al. 2004) of each galaxy on hover, and,
on a click, the galaxy's nearest neighbours in latent space with their thumbnails and distances.

At survey sizes only ``max_points`` galaxies are drawn (a seeded random sample) so the page stays
responsive; their neighbours are searched among *all* galaxies, exactly
(:func:`galmoco.analysis.neighbours.nearest_neighbours`), and the neighbours' thumbnails travel with
the page. Thumbnails are small JPEGs, so the demo's 2,000 galaxies make a page of a few MB.

The page marks itself for automated checks: ``data-galmoco-ready`` on ``<html>`` once the plot and the
neighbour panel are rendered (counts of canvases and neighbour images), ``data-galmoco-error`` with the
message of any script error.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table
from tqdm.auto import tqdm

from galmoco.analysis.neighbours import nearest_neighbours
from galmoco.analysis.plots import lupton_rgb
from galmoco.analysis.probes import is_categorical
from galmoco.analysis.rundir import default_probe_columns, find_embeddings
from galmoco.errors import GalmocoError
from galmoco.files import atomic_write_text
from galmoco.io.storeset import StoreSet

if TYPE_CHECKING:  # Bokeh is an optional dependency (galmoco[explore])
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

__all__ = ["build_explorer", "map_2d"]

#: thumbnail side in pixels and JPEG quality: ~2 KB per galaxy
THUMB_SIZE, THUMB_QUALITY = 48, 75

_MARKERS = """<script>
window.addEventListener('error', function (e) {
  document.documentElement.dataset.galmocoError = String(e.message || e);
});
const galmocoConsoleError = console.error;
console.error = function (...args) {
  document.documentElement.dataset.galmocoError = args.map(String).join(' ');
  galmocoConsoleError.apply(console, args);
};
</script>"""

# after Bokeh has rendered: count canvases and neighbour images, looking through shadow roots
_READY_JS = """
function all(root, selector) {
  let found = Array.from(root.querySelectorAll(selector));
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { found = found.concat(all(el.shadowRoot, selector)); }
  }
  return found;
}
let tries = 0;
function mark() {
  const canvases = all(document, 'canvas').length;
  const images = all(document, '.galmoco-neighbours img').length;
  if ((canvases > 0 && images > 0) || tries++ > 100) {
    document.documentElement.dataset.galmocoReady = 'canvases=' + canvases + ';neighbour_images=' + images;
  } else {
    setTimeout(mark, 50);
  }
}
mark();
"""

# a tap on a galaxy: its neighbours' thumbnails, ids and distances into the panel; neighbour g < D is
# drawn point g, else row g - D of the extra gallery (thumbnails are on the page once)
_TAP_JS = """
const i = points.selected.indices[0];
if (i === undefined) { return; }
const d = points.data, D = d.id.length;
const fig = (src, caption) => '<figure style="' + figStyle + '"><img style="' + imgStyle + '" src="' + src
  + '"><figcaption>' + caption + '</figcaption></figure>';
const field = (g, name) => g < D ? d[name][g] : extra.data[name][g - D];
let out = '<div class="galmoco-neighbours"><b>' + d.id[i] + '</b> and its nearest neighbours (' + metric
  + ' distance):<br>';
out += fig(d.thumb[i], 'query');
for (let j = 0; j < d.nb[i].length; j++) {
  const g = d.nb[i][j];
  out += fig(field(g, 'thumb'), field(g, 'id') + '<br>' + d.nd[i][j].toPrecision(3));
}
panel.text = out + '</div>';
"""

# inline styles: Bokeh renders the panel inside a shadow root, which a page stylesheet does not reach
_FIG_STYLE = "display:inline-block;margin:2px;text-align:center;font:10px sans-serif"
_IMG_STYLE = "width:72px;height:72px;image-rendering:pixelated"


def map_2d(latent: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """``(N, 2)`` coordinates of the latent vectors and the method: UMAP (McInnes et al. 2018) when
    ``umap-learn`` is installed, else PCA."""
    x = np.asarray(latent, dtype=np.float64)
    try:
        import umap
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x), "PCA"
    return umap.UMAP(random_state=seed).fit_transform(x), "UMAP"


def _thumbnails(store: StoreSet, rows: np.ndarray) -> list[str]:
    """``data:`` URIs of JPEG Lupton RGB thumbnails (one stretch per galaxy) of global store ``rows``."""
    from PIL import Image

    out = []
    for row in tqdm(rows, desc="thumbnails", unit="stamp", disable=None):  # ~3 ms each: 20k is a minute
        stamp = store.read_rows(int(row), int(row) + 1)
        rgb = lupton_rgb(stamp, stretch=max(float(np.percentile(stamp, 99.5)), 1e-6), bands=store.bands)[0]
        image = Image.fromarray(rgb[::-1]).resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMB_QUALITY)
        out.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


def _colour_column(table: Table, colour: str | None) -> str | None:
    if colour is not None:
        if colour not in table.colnames or table[colour].ndim != 1:
            raise GalmocoError(f"--colour {colour!r}: not a catalogue column (columns: "
                               f"{', '.join(c for c in table.colnames if table[c].ndim == 1)})")
        return colour
    return next(iter(["class"] if "class" in table.colnames else default_probe_columns(table)), None)


def _read_source(source: str | Path, store: str | Path | None) -> tuple[Table, Path, list[str]]:
    """The embeddings table of a run directory (or the table itself), its path, and its stores."""
    from galmoco.embed import read_embeddings

    path = Path(source)
    emb = find_embeddings(path) if path.is_dir() else path
    if emb is None:
        raise GalmocoError(f"{path}: no embeddings.* in this run directory; run `galmoco embed` first")
    table = read_embeddings(emb)
    stores = [s for s in str(store or table.meta.get("STORE", "")).split(",") if s]
    if not stores:
        raise GalmocoError(f"{emb}: records no store; pass --dataset")
    return table, emb, stores


def _map_figure(points: ColumnDataSource, title: str, method: str, categorical: bool) -> figure:
    """The Bokeh scatter of the drawn galaxies, coloured by their ``value`` (categories or a colour
    scale), with a thumbnail on hover."""
    from bokeh.models import HoverTool
    from bokeh.palettes import Category10_10, Viridis256
    from bokeh.plotting import figure
    from bokeh.transform import factor_cmap, linear_cmap

    plot = figure(width=720, height=640, title=title, tools="pan,wheel_zoom,box_zoom,reset,tap",
                  x_axis_label=f"{method} 1", y_axis_label=f"{method} 2")
    values = points.data["value"]
    if categorical:
        factors = sorted(set(values))
        fill = factor_cmap("value", Category10_10 * (len(factors) // 10 + 1), factors)
        plot.scatter("x", "y", source=points, size=6, alpha=0.8, color=fill, legend_field="value")
    else:
        fill = linear_cmap("value", Viridis256, float(np.nanmin(values)), float(np.nanmax(values)))
        plot.scatter("x", "y", source=points, size=6, alpha=0.8, color=fill)
    plot.add_tools(HoverTool(tooltips='<div><img src="@thumb" width="96" height="96"><br>@id: @value</div>'))
    return plot


def build_explorer(source: str | Path, out_html: str | Path, store: str | Path | None = None,
                   colour: str | None = None, max_points: int = 3000, k: int = 6, metric: str = "l2",
                   seed: int = 0) -> Path:
    """Write the explorer page of a run's (or an embeddings table's) latent space.

    Args:
        source: a run directory (its ``embeddings.*``) or an embeddings table.
        out_html: the page to write.
        store: the packed store(s) of the stamps, comma-separated (default: those the embeddings
            record).
        colour: the catalogue column that colours the map (default ``class``, else the first physical
            column).
        max_points: galaxies drawn at most (a seeded random sample of larger sets).
        k: neighbours shown on a click (searched among all galaxies).
        metric: ``"l1"``, ``"l2"`` or ``"cosine"``.
        seed: the sample and the map.

    Returns:
        ``out_html``.
    """
    try:
        from bokeh.document import Document
        from bokeh.embed import file_html
        from bokeh.events import DocumentReady
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource, CustomJS, Div
        from bokeh.resources import INLINE
    except ImportError:
        raise GalmocoError("the explorer needs Bokeh: pip install 'galmoco[explore]'") from None

    table, emb, stores = _read_source(source, store)
    latent = np.asarray(table["latent"], dtype=np.float32)
    n = len(table)
    rng = np.random.default_rng(seed)
    drawn = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    nb, nd = nearest_neighbours(latent, drawn, min(k, n - 1), metric)
    # every galaxy with a thumbnail on the page: the drawn ones, then neighbours that are not drawn
    extra = np.setdiff1d(np.unique(nb), drawn)
    shown = np.concatenate([drawn, extra])
    position = {int(g): i for i, g in enumerate(shown)}
    with StoreSet(stores) as data:
        if len(data) != n:
            raise GalmocoError(f"{stores[0]}: {len(data)} stamps but {emb} has {n} rows")
        thumbs = _thumbnails(data, shown)
    xy, method = map_2d(latent[drawn], seed)
    ids = np.asarray(table["id"]).astype(str)
    name = _colour_column(table, colour)
    values = np.asarray(table[name])[drawn] if name else np.zeros(len(drawn))
    categorical = bool(name) and is_categorical(values)
    points = ColumnDataSource({
        "x": xy[:, 0], "y": xy[:, 1], "id": ids[drawn].tolist(), "thumb": thumbs[:len(drawn)],
        "value": values.astype(str).tolist() if categorical else values.astype(float),
        "nb": [[position[int(g)] for g in r] for r in nb], "nd": nd.astype(float).tolist()})
    gallery = ColumnDataSource({"id": ids[extra].tolist(), "thumb": thumbs[len(drawn):]})
    title = (f"galmoco latent space ({method}): {len(drawn):,} of {n:,} galaxies drawn"
             + (f", coloured by {name}" if name else ""))
    plot = _map_figure(points, title, method, categorical)
    points.selected.indices = [0]
    panel = Div(text="", width=420)
    tap = CustomJS(args={"points": points, "extra": gallery, "panel": panel, "metric": metric,
                         "figStyle": _FIG_STYLE, "imgStyle": _IMG_STYLE},
                   code=_TAP_JS)
    points.selected.js_on_change("indices", tap)
    layout = row(plot, column(Div(text="<b>Click a galaxy</b> to see its nearest neighbours in latent space "
                                       f"(searched among all {n:,})."), panel))
    doc = Document()
    doc.add_root(layout)
    doc.js_on_event(DocumentReady, tap)  # the page opens with the first galaxy's neighbours
    doc.js_on_event(DocumentReady, CustomJS(code=_READY_JS))
    page = file_html(doc, INLINE, title="galmoco explorer")
    page = page.replace("<head>", "<head>" + _MARKERS, 1)
    out = Path(out_html)
    atomic_write_text(out, page)
    return out
