"""The files of a finished simulated DESaccess job besides its cutouts (positions CSV, log, summary) and
the truth tables written next to it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from galmoco.files import atomic_output
from galmoco.sim import layout

__all__ = ["TRUTH_NAME", "write_job_files", "write_truth"]

TRUTH_NAME = "truth"  # truth.fits and truth.ecsv next to the job folder


def write_job_files(
    job_dir: Path,
    jobid: str,
    truth_rows: list[dict],
    bands: str,
    size: int,
    unmatched: tuple[list, list],
    elapsed: float,
) -> None:
    """positions CSV, the log and summary.json, rows ordered by tile as DESaccess orders them."""
    order = sorted(range(len(truth_rows)), key=lambda i: truth_rows[i]["tilename"])
    records = [truth_rows[i] for i in order]
    rows = layout.positions_rows(records, bands, size)
    layout.write_positions_csv(job_dir / f"positions_{jobid}.csv", rows)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    lines = [f"Simulated DESaccess cutout job {jobid}: {len(rows)} positions, bands {bands}"]
    for r in records:
        if r["trimmed"]:
            for name in r["_files"]:
                lines.append(
                    f"MakeFitsCut - {r['id']}/{name} is smaller than user requested. This is likely "
                    "because the object/coordinate was in close proximity to the edge of a tile. "
                    f"(dx, dy): ({size}, {size}), "
                    f"(NAXIS1, NAXIS2): ({r['width']}, {r['height']})"
                )
    lines += [
        "All processes finished.",
        f"Processing took (s): {elapsed:.2f}",
        f"Total number of files: {sum(len(r['_files']) for r in records)}",
    ]
    (job_dir / f"cutout_{jobid}.log").write_text("".join(f"{stamp} - 0 - INFO     - {m}\n" for m in lines))
    layout.write_summary(
        job_dir,
        jobid,
        rows,
        [r["_files"] for r in records],
        bands,
        size,
        unmatched,
        elapsed,
        sum(r["_bytes"] for r in records),
    )


def write_truth(out: Path, truth_rows: list[dict], bands: tuple[str, ...]) -> None:
    """truth.fits and truth.ecsv (one row per cutout, in object index order), atomically."""
    from astropy.table import Table

    rows = sorted(truth_rows, key=lambda r: r["index"])
    names = [k for k in rows[0] if not k.startswith("_")]
    table = Table(rows=[[r[k] for k in names] for r in rows], names=names)
    table.meta["bands"] = "".join(bands)
    table.meta["comment"] = (
        "galmoco.sim truth: mags AB at zero point 30; e = (1-q)/(1+q) of the dominant component"
    )
    for suffix, fmt in ((".fits", "fits"), (".ecsv", "ascii.ecsv")):
        with atomic_output(out / f"{TRUTH_NAME}{suffix}") as tmp:
            table.write(tmp, format=fmt, overwrite=True)
