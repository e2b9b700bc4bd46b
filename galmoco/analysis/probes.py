"""Linear and kNN probes: how much of a catalogue column can be read off the latent vectors.

Categorical columns (strings, booleans, integers with at most :data:`MAX_INT_CLASSES` distinct values)
get classifiers scored by accuracy; numeric columns get regressors scored by R^2 on the held-out
split. Features are standardised on the training split first (scikit-learn pipelines). The linear
probe is the standard representation-learning evaluation (e.g. Chen et al. 2020, SimCLR; He et al.
2020, MoCo); the kNN probe is Wu et al. (2018)'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table, join

from galmoco.errors import GalmocoError

__all__ = ["MAX_INT_CLASSES", "is_categorical", "run_probes"]

#: an integer column with at most this many distinct values is treated as class labels
MAX_INT_CLASSES = 20


def is_categorical(values: np.ndarray) -> bool:
    """Strings, booleans and integer columns with few distinct values are categorical."""
    kind = np.asarray(values).dtype.kind
    return kind in "USOb" or (kind in "iu" and len(np.unique(values)) <= MAX_INT_CLASSES)


def _valid(values: np.ndarray) -> np.ndarray:
    col = np.ma.getdata(values)
    ok = ~np.ma.getmaskarray(values)
    if col.dtype.kind == "f":
        ok &= np.isfinite(col)
    return ok


def run_probes(
    embeddings: Table,
    catalog: Table | None = None,
    columns: Sequence[str] = (),
    test_fraction: float = 0.3,
    seed: int = 0,
    latent_column: str = "latent",
    k: int = 10,
) -> Table:
    """Fit linear and kNN probes from latent vectors to each column; score on a held-out split.

    Args:
        embeddings: table with ``id`` and ``latent_column`` (N, D).
        catalog: optional truth table joined on ``id``; without it the columns come from
            ``embeddings`` (a store's catalogue columns are copied there by ``galmoco embed``).
        columns: the columns to predict.
        test_fraction: held-out share of the rows, in (0, 1).
        seed: random seed of the split.
        latent_column: which vectors to probe (``latent`` or ``projection``).
        k: neighbours of the kNN probe.

    Returns:
        Table with ``column``, ``kind`` (``classification``/``regression``), ``probe``
        (``linear``/``knn``), ``metric`` (``accuracy``/``r2``), ``score``, ``baseline`` (majority-class
        accuracy, or 0 for R^2), ``n_train``, ``n_test``.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0 < test_fraction < 1:
        raise GalmocoError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    if latent_column not in embeddings.colnames:
        raise GalmocoError(f"the embeddings table has no column {latent_column!r}")
    if catalog is not None:
        if "id" not in catalog.colnames:
            raise GalmocoError("the catalogue has no 'id' column to join on")
        keep = ["id", latent_column]
        cat = catalog[["id"] + [c for c in columns if c in catalog.colnames]]
        table = join(embeddings[keep], cat, keys="id", join_type="inner")
        if len(table) == 0:
            raise GalmocoError("no id of the embeddings table is in the catalogue")
    else:
        table = embeddings
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise GalmocoError(f"columns not found: {', '.join(missing)} "
                           f"(available: {', '.join(table.colnames)})")
    x_all = np.asarray(table[latent_column], dtype=np.float64)
    rows = []
    for name in columns:
        ok = _valid(table[name])
        y, x = np.ma.getdata(table[name])[ok], x_all[ok]
        categorical = is_categorical(y)
        if len(y) < 4 or (categorical and len(np.unique(y)) < 2):
            raise GalmocoError(f"column {name!r}: needs >= 4 valid rows and >= 2 classes to probe")
        counts = np.unique(y, return_counts=True)[1] if categorical else None
        stratify = y if categorical and counts.min() >= 2 else None
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                                  stratify=stratify)
        n_neighbours = min(k, len(y_tr))
        if categorical:
            models = {"linear": LogisticRegression(max_iter=2000), "knn": KNeighborsClassifier(n_neighbours)}
            values, counts = np.unique(y_tr, return_counts=True)
            baseline = float(np.mean(y_te == values[np.argmax(counts)]))
        else:
            models = {"linear": Ridge(alpha=1.0), "knn": KNeighborsRegressor(n_neighbours)}
            baseline = 0.0
        for probe, estimator in models.items():
            fitted = make_pipeline(StandardScaler(), estimator).fit(x_tr, y_tr)
            rows.append((name, "classification" if categorical else "regression", probe,
                         "accuracy" if categorical else "r2", float(fitted.score(x_te, y_te)), baseline,
                         len(y_tr), len(y_te)))
    names = ("column", "kind", "probe", "metric", "score", "baseline", "n_train", "n_test")
    return Table(rows=rows, names=names) if rows else Table(names=names)
