"""Linear and kNN probes: how much of a catalogue column can be read off the latent vectors.

Categorical columns (strings, booleans, integers with at most :data:`MAX_INT_CLASSES` distinct values)
get classifiers scored by accuracy; numeric columns get regressors scored by R^2 on the held-out
split. Features are standardised on the training split first (scikit-learn pipelines). The linear
probe is the standard representation-learning evaluation (e.g. Chen et al. 2020, SimCLR; He et al.
2020, MoCo); the kNN probe is Wu et al. (2018)'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    """Which entries of a column can be probed.

    Args:
        values: a (possibly masked) table column.

    Returns:
        Boolean mask: not masked and, for floats, finite.
    """
    col = np.ma.getdata(values)
    ok = ~np.ma.getmaskarray(values)
    if col.dtype.kind == "f":
        ok &= np.isfinite(col)
    return ok


def _join_catalog(embeddings: Table, catalog: Table, columns: Sequence[str],
                  latent_column: str) -> Table:
    """The embeddings' vectors joined with the catalogue's probed columns on ``id``.

    Args:
        embeddings: table with ``id`` and ``latent_column``.
        catalog: truth table with ``id``.
        columns: the columns to predict (those the catalogue lacks are left out here).
        latent_column: which vectors to keep.

    Returns:
        Inner join on ``id``: ``id``, ``latent_column`` and the catalogue's probed columns.
    """
    if "id" not in catalog.colnames:
        raise GalmocoError("the catalogue has no 'id' column to join on")
    cat = catalog[["id"] + [c for c in columns if c in catalog.colnames]]
    table = join(embeddings[["id", latent_column]], cat, keys="id", join_type="inner")
    if len(table) == 0:
        raise GalmocoError("no id of the embeddings table is in the catalogue")
    return table


def _probe_table(embeddings: Table, catalog: Table | None, columns: Sequence[str],
                 latent_column: str) -> Table:
    """The table the probes read, checked to hold the vectors and every probed column.

    Args:
        embeddings: table with ``id`` and ``latent_column`` (N, D).
        catalog: optional truth table joined on ``id``; ``None`` reads the columns from ``embeddings``.
        columns: the columns to predict.
        latent_column: which vectors to probe.

    Returns:
        ``embeddings`` itself, or its join with ``catalog``.
    """
    if latent_column not in embeddings.colnames:
        raise GalmocoError(f"the embeddings table has no column {latent_column!r}")
    table = embeddings if catalog is None else _join_catalog(embeddings, catalog, columns, latent_column)
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise GalmocoError(f"columns not found: {', '.join(missing)} "
                           f"(available: {', '.join(table.colnames)})")
    return table


def _estimators(categorical: bool, n_neighbours: int) -> dict[str, Any]:
    """The linear and kNN probes of one column (unfitted scikit-learn estimators).

    Args:
        categorical: classifiers (else regressors).
        n_neighbours: neighbours of the kNN probe.

    Returns:
        ``{"linear": ..., "knn": ...}``: logistic regression and kNN classifier, or ridge regression
        (alpha 1) and kNN regressor.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    if categorical:
        return {"linear": LogisticRegression(max_iter=2000), "knn": KNeighborsClassifier(n_neighbours)}
    return {"linear": Ridge(alpha=1.0), "knn": KNeighborsRegressor(n_neighbours)}


def _majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``y_test`` of always predicting the most common class of ``y_train``.

    Args:
        y_train: training labels.
        y_test: held-out labels.

    Returns:
        The share of ``y_test`` equal to the training split's majority class, in [0, 1].
    """
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(y_test == values[np.argmax(counts)]))


def _probe_column(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
                  k: int) -> list[tuple]:
    """Fit and score the linear and kNN probes of one column.

    Args:
        name: the column's name, for the output and messages.
        x: latent vectors of the valid rows, (N, D).
        y: the column's valid values, (N,).
        test_fraction: held-out share of the rows, in (0, 1).
        seed: random seed of the split (stratified by class when every class has >= 2 rows).
        k: neighbours of the kNN probe (at most the training split's size).

    Returns:
        One ``(column, kind, probe, metric, score, baseline, n_train, n_test)`` row per probe.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    categorical = is_categorical(y)
    if len(y) < 4 or (categorical and len(np.unique(y)) < 2):
        raise GalmocoError(f"column {name!r}: needs >= 4 valid rows and >= 2 classes to probe")
    stratify = y if categorical and np.unique(y, return_counts=True)[1].min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=stratify)
    baseline = _majority_accuracy(y_tr, y_te) if categorical else 0.0
    kind, metric = ("classification", "accuracy") if categorical else ("regression", "r2")
    rows = []
    for probe, estimator in _estimators(categorical, min(k, len(y_tr))).items():
        fitted = make_pipeline(StandardScaler(), estimator).fit(x_tr, y_tr)
        rows.append((name, kind, probe, metric, float(fitted.score(x_te, y_te)), baseline,
                     len(y_tr), len(y_te)))
    return rows


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
    if not 0 < test_fraction < 1:
        raise GalmocoError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    table = _probe_table(embeddings, catalog, columns, latent_column)
    x_all = np.asarray(table[latent_column], dtype=np.float64)
    rows = []
    for name in columns:
        ok = _valid(table[name])
        rows += _probe_column(name, x_all[ok], np.ma.getdata(table[name])[ok], test_fraction, seed, k)
    names = ("column", "kind", "probe", "metric", "score", "baseline", "n_train", "n_test")
    return Table(rows=rows, names=names) if rows else Table(names=names)
