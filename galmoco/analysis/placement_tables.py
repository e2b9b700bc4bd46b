"""Placement tables: the ranks of every transform and of a second observation, their summary, and where
invariance stops (the rank-1 fraction by magnitude and by stamp signal-to-noise).

A *second observation* is the same galaxies observed again (``galmoco simulate --observations 2``, or
two stores of the same positions from different releases or surveys), embedded with the same model.
Its rank is that of each galaxy's second-observation vector among all first-observation vectors (rank 1:
it finds itself), the two tables joined by ``id``. Every id must be unique in each table; ids found in
only one table are counted and named (:class:`IdJoin`), never silently dropped: their rank is 0 (not
ranked; ranks start at 1), which every table format keeps.

The ranks table carries the columns the breakdown bins on (``mag_r`` and ``stamp_snr`` when the
embeddings have them), so :func:`placement_breakdown` is a direct computation from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from galmoco.analysis.placement import placement_ranks
from galmoco.data.transforms import RANDOM_ROTATION, SYMMETRIES, rotation_angle
from galmoco.errors import GalmocoError

__all__ = [
    "DEFAULT_MAG_COLUMN", "MAG_EDGES", "OBSERVED_AGAIN", "SNR_COLUMN", "SNR_EDGES", "SPACES", "IdJoin",
    "breakdown_pivot", "join_by_id", "placement_breakdown", "placement_summary", "placement_table",
    "rank_columns", "transform_names",
]

#: the rank column of the second observation
OBSERVED_AGAIN = "observed_again"
#: what placement can rank: the latent vector or the projection head's output
SPACES: tuple[str, ...] = ("latent", "projection")
#: default brightness column of the breakdown (the simulator's truth and most catalogues: AB magnitude)
DEFAULT_MAG_COLUMN = "mag_r"
#: magnitude bin edges: < 19, 19-20, 20-21, 21-22, > 22
MAG_EDGES: tuple[float, ...] = (19.0, 20.0, 21.0, 22.0)
#: the stamp signal-to-noise column written by ``galmoco embed`` (:func:`galmoco.embed.stamp_snr`)
SNR_COLUMN = "stamp_snr"
#: stamp S/N bin edges: < 5, 5-10, 10-20, 20-50, > 50
SNR_EDGES: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0)
_EXAMPLES = 5


def _is_transform(name: str) -> bool:
    return name in SYMMETRIES[1:] or name == RANDOM_ROTATION or rotation_angle(name) is not None


def transform_names(table: Table, space: str = "latent") -> list[str]:
    """The transforms whose copies the table holds (``<space>_<name>`` columns), in table order."""
    prefix = f"{space}_"
    names = [c[len(prefix):] for c in table.colnames if c.startswith(prefix)]
    return [n for n in names if _is_transform(n)]


def rank_columns(ranks: Table) -> list[str]:
    """The rank columns of a placement ranks table (integer columns but ``id``; the rest are carried)."""
    return [c for c in ranks.colnames if c != "id" and np.issubdtype(ranks[c].dtype, np.integer)]


@dataclass
class IdJoin:
    """Rows of two tables matched by id: ``first[i]`` and ``second[i]`` are the same object."""

    first: np.ndarray
    second: np.ndarray
    only_first: list[str]
    only_second: list[str]

    def message(self, first_name: str = "first", second_name: str = "second") -> str:
        """One line: matched count, and the count and first examples of ids found in one table only."""
        def part(ids: list[str], name: str) -> str:
            examples = f" (e.g. {', '.join(ids[:_EXAMPLES])})" if ids else ""
            return f"{len(ids)} only in {name}{examples}"

        return (f"{self.first.size} ids matched; {part(self.only_first, first_name)}; "
                f"{part(self.only_second, second_name)}")


def _unique(ids: np.ndarray, name: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        examples = ", ".join(dup[:_EXAMPLES])
        raise GalmocoError(f"{name}: {dup.size} ids occur more than once (e.g. {examples}); ids must be "
                           "unique to join two observations")


def join_by_id(first_ids: Sequence[str], second_ids: Sequence[str], first_name: str = "first",
               second_name: str = "second") -> IdJoin:
    """Match two id lists.

    Args:
        first_ids, second_ids: the ids of each table.
        first_name, second_name: how errors name the tables (e.g. their files).

    Returns:
        An :class:`IdJoin` (matched rows in the first table's order).

    Raises:
        GalmocoError: an id occurs twice in one table (count and examples).
    """
    a, b = np.asarray(first_ids).astype(str), np.asarray(second_ids).astype(str)
    _unique(a, first_name)
    _unique(b, second_name)
    where = {v: i for i, v in enumerate(b)}
    first = np.array([i for i, v in enumerate(a) if v in where], np.int64)
    second = np.array([where[a[i]] for i in first], np.int64)
    in_first = set(a)
    return IdJoin(first, second, [v for v in a if v not in where], [v for v in b if v not in in_first])


def _vectors(table: Table, column: str, name: str) -> np.ndarray:
    if column not in table.colnames:
        hint = "--projection" if column.startswith("projection") else "--transforms"
        raise GalmocoError(f"{name} has no column {column}; re-run `galmoco embed` with {hint}")
    return np.asarray(table[column])


def placement_table(
    embeddings: Table,
    metric: str = "l1",
    transforms: Sequence[str] | None = None,
    exclude: np.ndarray | None = None,
    chunk: int | None = None,
    space: str = "latent",
    observed_again: Table | None = None,
    carry: Sequence[str] = (),
    names: tuple[str, str] = ("the embeddings table", "the observed-again table"),
) -> Table:
    """Placement ranks of every transform in an embeddings table, and of a second observation.

    Args:
        embeddings: table with ``id``, ``<space>`` (N, D) and ``<space>_<transform>`` columns.
        metric: ``"l1"``, ``"l2"`` or ``"cosine"``.
        transforms: names to rank (default: every transform whose copies the table holds).
        exclude: optional ``(N,)`` bool, True for rows to leave out entirely (neither ranked nor a
            competitor), e.g. empty-sky stamps that have nothing to recognise.
        chunk: see :func:`~galmoco.analysis.placement.placement_ranks`.
        space: ``"latent"`` or ``"projection"`` (the projection head's output).
        observed_again: embeddings of a second observation of the same objects (``id`` and ``<space>``);
            adds the :data:`OBSERVED_AGAIN` rank column, 0 for ids it lacks.
        carry: further catalogue columns to copy into the ranks table (for a breakdown);
            ``mag_r`` and ``stamp_snr`` are copied when present.
        names: how messages name the two tables.

    Returns:
        Table with ``id``, one int64 rank column per transform (then ``observed_again``), and the carried
        float64 columns, one row per used object; meta ``metric``, ``space``, ``n_excluded`` and, with a
        second observation, ``join`` (:meth:`IdJoin.message`).
    """
    if space not in SPACES:
        raise GalmocoError(f"unknown space {space!r}; expected one of {', '.join(SPACES)}")
    available = transform_names(embeddings, space)
    chosen = available if transforms is None else list(transforms)
    if not chosen and observed_again is None:
        option = "--transforms --projection" if space == "projection" else "--transforms"
        raise GalmocoError(f"{names[0]} has no {space}_<transform> columns; re-run `galmoco embed {option}`")
    keep = np.ones(len(embeddings), bool) if exclude is None else ~np.asarray(exclude, bool)
    if not keep.any():
        raise GalmocoError("every row is excluded; nothing to rank")
    ids = np.asarray(embeddings["id"]).astype(str)
    out = Table({"id": ids[keep]})
    originals = _vectors(embeddings, space, names[0])[keep]
    for t in chosen:
        copies = _vectors(embeddings, f"{space}_{t}", names[0])[keep]
        out[t] = placement_ranks(originals, copies, metric, chunk)
    out.meta.update(metric=metric, space=space, n_excluded=int((~keep).sum()))
    if observed_again is not None:
        join = join_by_id(ids, np.asarray(observed_again["id"]), *names)
        used = keep[join.first]  # an excluded object's second observation is excluded with it
        position = np.cumsum(keep) - 1  # row of the ranks table of each kept embeddings row
        rows = position[join.first[used]]
        second = _vectors(observed_again, space, names[1])[join.second[used]]
        column = np.zeros(len(out), np.int64)  # 0: not observed again
        column[rows] = placement_ranks(originals, second, metric, chunk, owners=rows)
        out[OBSERVED_AGAIN] = column
        out.meta["join"] = join.message(*names)
    wanted = [DEFAULT_MAG_COLUMN, SNR_COLUMN, *carry]
    for c in dict.fromkeys(wanted):
        if c in embeddings.colnames and embeddings[c].ndim == 1:
            out[c] = np.asarray(embeddings[c], np.float64)[keep]
        elif c in carry:
            raise GalmocoError(f"{names[0]} has no column {c!r} to break the ranks down by")
    return out


def _values(column) -> np.ndarray:
    """Ranks as int64, 0 for an object without that copy (no second observation; also where masked)."""
    return np.ma.filled(np.ma.asarray(column).astype(np.int64), 0)


def placement_summary(ranks: Table) -> Table:
    """One row per rank column: how often the copy places first, and the worst cases.

    Args:
        ranks: output of :func:`placement_table`.

    Returns:
        Table with ``transform``, ``metric``, ``space``, ``n`` (objects ranked), ``n_missing`` (objects
        without that copy: ids missing from the second observation), ``n_excluded``, ``frac_rank1``,
        ``frac_rank_le5``, ``median``, ``p95`` (ranks) and ``worst10_ids`` (comma-separated ids of the
        ten highest ranks, worst first).
    """
    rows = []
    ids = np.asarray(ranks["id"]).astype(str)
    for t in rank_columns(ranks):
        all_r = _values(ranks[t])
        ranked = all_r > 0
        r = all_r[ranked]
        worst = np.argsort(-r, kind="stable")[:10]
        stats = ((float(np.mean(r == 1)), float(np.mean(r <= 5)), float(np.median(r)),
                  float(np.percentile(r, 95))) if r.size else (np.nan,) * 4)
        rows.append((t, ranks.meta.get("metric", ""), ranks.meta.get("space", "latent"), int(r.size),
                     int((~ranked).sum()), int(ranks.meta.get("n_excluded", 0)), *stats,
                     ",".join(ids[ranked][worst])))
    names = ("transform", "metric", "space", "n", "n_missing", "n_excluded", "frac_rank1", "frac_rank_le5",
             "median", "p95", "worst10_ids")
    return Table(rows=rows, names=names) if rows else Table(names=names)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    return ([f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
            + [f">{edges[-1]:g}"])


def placement_breakdown(
    ranks: Table, column: str | None = None, edges: Sequence[float] | None = None,
    snr_edges: Sequence[float] = SNR_EDGES,
) -> Table:
    """Each rank column's rank-1 fraction in bins of a catalogue column and of the stamp S/N.

    Bins are half-open ``[lo, hi)``, the first from -inf and the last to +inf (labels ``<19``, ``19-20``,
    ..., ``>22``); rows whose value is not finite, or without a rank (0), fall in no bin.

    Args:
        ranks: output of :func:`placement_table` (it carries the binning columns).
        column: catalogue column to bin by (default :data:`DEFAULT_MAG_COLUMN` when present).
        edges: its bin edges, increasing (default :data:`MAG_EDGES`).
        snr_edges: bin edges of :data:`SNR_COLUMN` (used when present).

    Returns:
        Table with ``transform``, ``column``, ``bin``, ``lo``, ``hi``, ``n``, ``frac_rank1`` (NaN for an
        empty bin), one row per transform, column and bin.
    """
    plan = []
    if column is not None:
        if column not in ranks.colnames:
            raise GalmocoError(f"the ranks table has no column {column!r} to break down by")
        plan.append((column, edges or MAG_EDGES))
    elif DEFAULT_MAG_COLUMN in ranks.colnames:
        plan.append((DEFAULT_MAG_COLUMN, edges or MAG_EDGES))
    if SNR_COLUMN in ranks.colnames and SNR_COLUMN != column:
        plan.append((SNR_COLUMN, snr_edges))
    rows = []
    for name, e in plan:
        e = [float(v) for v in e]
        if any(b <= a for a, b in zip(e[:-1], e[1:], strict=False)) or not e:
            raise GalmocoError(f"bin edges of {name} must increase, got {e}")
        values = np.asarray(ranks[name], np.float64)
        bounds = [-np.inf, *e, np.inf]
        for t in rank_columns(ranks):
            r = _values(ranks[t])
            for label, lo, hi in zip(_bin_labels(e), bounds[:-1], bounds[1:], strict=True):
                inside = (values >= lo) & (values < hi) & (r > 0)
                n = int(inside.sum())
                rows.append((t, name, label, lo, hi, n, float(np.mean(r[inside] == 1)) if n else np.nan))
    names = ("transform", "column", "bin", "lo", "hi", "n", "frac_rank1")
    if not rows:
        return Table(names=names, dtype=(str, str, str, float, float, int, float))
    return Table(rows=rows, names=names)


def breakdown_pivot(breakdown: Table, column: str) -> Table:
    """One row per transform, one column per bin of ``column`` (the rank-1 fraction; the header names the
    bin and its count of objects of the first transform), from :func:`placement_breakdown`'s table."""
    part = breakdown[breakdown["column"] == column]
    transforms = list(dict.fromkeys(part["transform"]))
    out = Table({"transform": transforms})
    for label in dict.fromkeys(part["bin"]):
        cell = part[part["bin"] == label]
        by_t = dict(zip(cell["transform"], cell["frac_rank1"], strict=True))
        out[f"{column} {label} (n={cell['n'][0]})"] = [float(by_t[t]) for t in transforms]
    return out
