"""``galmoco.fetch``: download DES cutouts for a manifest from DESaccess or the Legacy Survey viewer.

:func:`fetch_cutouts` validates the manifest before any request, runs one of the two backends over
the shared download engine (:mod:`galmoco.fetch.engine`) and writes ``fetch_summary.csv`` next to
the data: one row per manifest row with status ``fetched``, ``skipped`` (already present and valid),
``out_of_footprint``, ``failed`` (with the reason), ``duplicate`` or ``pending`` (interrupted).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch import desaccess, jobs, legacysurvey
from galmoco.fetch.credentials import get_credentials
from galmoco.fetch.engine import (
    SUMMARY_NAME,
    FetchInterrupted,
    HttpClient,
    Outcome,
    RetryPolicy,
    run_downloads,
    write_summary,
)
from galmoco.fetch.manifest import read_manifest
from galmoco.surveys import DES_PIXEL_SCALE, parse_bands

__all__ = ["fetch_cutouts", "FetchResult", "arcmin_to_pixels", "pixels_to_arcmin", "DES_PIXEL_SCALE",
           "SERVICES", "default_url", "INSECURE_ENV"]

log = logging.getLogger(__name__)

SERVICES = ("desaccess", "legacysurvey")
#: set to 1 to allow what ``--allow-insecure`` allows (e.g. a notebook pointed at the local stand-in)
INSECURE_ENV = "GALMOCO_ALLOW_INSECURE"
_ENV = {"api_url": ("GALMOCO_DESACCESS_API", desaccess.DEFAULT_API),
        "files_url": ("GALMOCO_DESACCESS_FILES", desaccess.DEFAULT_FILES),
        "url": ("GALMOCO_LEGACYSURVEY_URL", legacysurvey.DEFAULT_URL)}


def default_url(name: str, given: str | None = None) -> str:
    """A service address: ``given``, else its environment variable, else the public service.

    Args:
        name: ``api_url``, ``files_url`` or ``url``.
        given: an explicit address.
    """
    env, public = _ENV[name]
    return given or os.environ.get(env) or public


def arcmin_to_pixels(arcmin: float, pixel_scale: float = DES_PIXEL_SCALE) -> int:
    """Side in pixels of a cutout ``arcmin`` wide, as DESaccess computes it: ``round(arcmin*60/scale)``."""
    return round(arcmin * 60.0 / pixel_scale)


def pixels_to_arcmin(size: int, pixel_scale: float = DES_PIXEL_SCALE) -> float:
    """Width in arcmin of ``size`` pixels (64 DES pixels = 0.2805 arcmin)."""
    return size * pixel_scale / 60.0


@dataclass
class FetchResult:
    """What a fetch did.

    Attributes:
        out: the output folder.
        summary: path of ``fetch_summary.csv``.
        counts: number of manifest rows per status.
        files_fetched: files downloaded in this run.
        files_skipped: files already present and valid.
    """

    out: Path
    summary: Path
    counts: dict[str, int]
    files_fetched: int
    files_skipped: int

    @property
    def n_failed(self) -> int:
        """Rows that failed."""
        return self.counts.get("failed", 0)


def _row_status(outcomes: list[Outcome] | None, bands: str | None) -> tuple[str, str, int]:
    """Status, reason and file count of one object from its files' outcomes."""
    if not outcomes:
        return "pending", "not fetched yet (interrupted)", 0
    failed = [o for o in outcomes if o.status not in ("fetched", "skipped")]
    if failed:
        status = "out_of_footprint" if all(o.status == "out_of_footprint" for o in failed) else "failed"
        reason = "; ".join(f"{o.download.dest.name}: {o.reason}" for o in failed)
        return status, reason, len(outcomes) - len(failed)
    status = "fetched" if any(o.status == "fetched" for o in outcomes) else "skipped"
    reason = ""
    if bands:
        have = {o.download.dest.name[:-5].rsplit("_", 1)[-1] for o in outcomes}
        missing = "".join(b for b in bands if b not in have)
        reason = f"bands {missing} not in the tile" if missing else ""
    return status, reason, len(outcomes)


def _base_rows(table: Table) -> list[dict]:
    rows = []
    for i, rec in enumerate(table):
        row = {"row": int(rec["row"])}
        if "coadd_object_id" in table.colnames:
            row.update(id=str(int(rec["coadd_object_id"])), coadd_object_id=int(rec["coadd_object_id"]))
        else:
            row.update(id=str(rec["id"]), ra=float(rec["ra"]), dec=float(rec["dec"]))
        row["index"] = i
        rows.append(row)
    return rows


def _des_rows(table: Table, out: Path, state: dict, grouped: dict[str, list[Outcome]],
              bands: str) -> list[dict]:
    keys = desaccess.row_keys(table)
    rows = _base_rows(table)
    for job in state["jobs"]:
        unmatched: set[str] = set()
        summary_path = out / desaccess.check_jobid(job["jobid"]) / "summary.json" if job["jobid"] else None
        if summary_path is not None and summary_path.is_file():
            unmatched = desaccess.unmatched_keys(json.loads(summary_path.read_text()))
        for row in rows[job["first"]:job["stop"]]:
            key = keys[row["index"]]
            if job["status"] == "failure":
                row.update(status="failed", reason=f"job {job['jobid']} failed: {job['message']}", n_files=0)
            elif key in unmatched:
                row.update(status="out_of_footprint", reason="unmatched_positions (outside the footprint)",
                           n_files=0)
            elif key not in grouped and job["status"] in ("downloaded", "incomplete"):
                row.update(status="failed", reason=f"no files for {key} in job {job['jobid']}", n_files=0)
            else:
                status, reason, n = _row_status(grouped.get(key), bands)
                row.update(status=status, reason=reason, n_files=n, id=key)
    return rows


def _duplicate_rows(table: Table) -> list[dict]:
    return [{"row": r, "status": "duplicate", "reason": f"same object as row {first}", "n_files": 0}
            for r, first in table.meta.get("duplicates", [])]


def _make_output(out: Path) -> Path | None:
    """Create ``out`` and prove it writable before the first request (a job submitted into a folder
    that cannot hold its id would be lost, yet count against the account's job limit).

    Returns:
        The topmost folder this call created (to remove again if nothing is written), or None.

    Raises:
        GalmocoError: ``out`` cannot be created or written.
    """
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        _remove_empty(out, missing[-1] if missing else None)
        raise GalmocoError(f"-o {out}: the output folder is not writable ({exc.strerror or exc})") from None
    return missing[-1] if missing else None


def _remove_empty(out: Path, created: Path | None) -> None:
    """Remove ``out`` and its parents up to ``created`` while empty (a failed login leaves no folder)."""
    if created is None:
        return
    for folder in (out, *out.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def _check_secure(api: str, allow_insecure: bool) -> None:
    """Refuse to send DES credentials over plain http:// unless asked to (a local test server)."""
    if urlsplit(api).scheme != "https" and not (allow_insecure or os.environ.get(INSECURE_ENV) == "1"):
        raise GalmocoError(f"--api-url {api}: refusing to send DES credentials over unencrypted "
                           f"{urlsplit(api).scheme or 'plain'}://; use https://, or pass --allow-insecure "
                           "(only for a local test server)")


def fetch_cutouts(manifest: str | Path | Table, out: str | Path, service: str = "desaccess",
                  release: str = "dr2", bands: str = "griz", size: int = 64, arcmin: float | None = None,
                  workers: int = 8, resume: bool = False, api_url: str | None = None,
                  files_url: str | None = None, url: str | None = None, layer: str = "ls-dr10",
                  pixscale: float = 0.262, database: str = "desdr", poll_interval: float = 3.0,
                  max_per_job: int = 5000, max_jobs: int = 10, retries: int = 5,
                  timeout: float = 30.0, backoff: float = 1.0, allow_insecure: bool = False) -> FetchResult:
    """Download cutouts for every object of a manifest.

    Args:
        manifest: path of a manifest (see :func:`galmoco.fetch.manifest.read_manifest`) or its table.
        out: output folder (created). DESaccess: the job layout
            ``<out>/<jobid>/<TILE>/<POSDIR>/<BASENAME>_<band>.fits``; Legacy Survey: ``<out>/<id>.fits``.
        service: ``desaccess`` or ``legacysurvey``.
        release: DESaccess data release (``dr1``/``dr2`` on the public server).
        bands: bands, e.g. ``"griz"``.
        size: cutout side in pixels (ignored when ``arcmin`` is given).
        arcmin: cutout side in arcmin; pixels = round(arcmin*60/pixel scale).
        workers: concurrent downloads.
        resume: continue a fetch in ``out``: skip finished jobs and files present and valid.
        api_url: DESaccess API (default ``$GALMOCO_DESACCESS_API``, else the public server).
        files_url: DESaccess file server (default ``$GALMOCO_DESACCESS_FILES``, else public).
        url: Legacy Survey viewer (default ``$GALMOCO_LEGACYSURVEY_URL``, else public).
        layer: Legacy Survey layer, e.g. ``ls-dr10`` or ``des-dr1``.
        pixscale: Legacy Survey pixel scale, arcsec/pixel.
        database: DESaccess database (``desdr`` public, ``dessci`` collaboration).
        poll_interval: first wait between DESaccess job polls, seconds.
        max_per_job: DESaccess rows per job (the server's per-job limit).
        max_jobs: DESaccess unfinished jobs at once (the server's concurrent-job limit).
        retries: attempts per request.
        timeout: socket timeout per request, seconds.
        backoff: first retry waits up to this many seconds (doubling, with full jitter, capped at 60).
        allow_insecure: send DESaccess credentials to an ``http://`` API (only for a local test
            server such as :mod:`galmoco.fetch.standin`); also ``GALMOCO_ALLOW_INSECURE=1``.
            Proxies come from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.

    Returns:
        A :class:`FetchResult`; ``fetch_summary.csv`` is written even when interrupted.

    Raises:
        GalmocoError: bad manifest or option, credentials over http://, an output folder that is not
            writable, refused login, a service error that stops the run.
    """
    if service not in SERVICES:
        raise GalmocoError(f"--service {service!r}: choose one of {', '.join(SERVICES)}")
    bands = "".join(parse_bands(bands, "--bands"))
    if workers < 1 or retries < 1 or max_per_job < 1 or max_jobs < 1:
        raise GalmocoError("--workers, --retries, --max-per-job and --max-jobs must be >= 1")
    scale = DES_PIXEL_SCALE if service == "desaccess" else pixscale
    if arcmin is not None:
        size = arcmin_to_pixels(arcmin, scale)
    table = manifest if isinstance(manifest, Table) else read_manifest(manifest, service == "desaccess")
    out = Path(out)
    http = HttpClient(RetryPolicy(attempts=retries, backoff=backoff, timeout=timeout), maxsize=workers)
    if service == "desaccess":
        width = arcmin if arcmin is not None else pixels_to_arcmin(size)
        if not 0.1 <= width <= 12.0:
            raise GalmocoError(f"--size/--arcmin: DESaccess cutouts are 0.1 to 12 arcmin wide, "
                               f"not {width:.4f}")
        api = default_url("api_url", api_url)
        _check_secure(api, allow_insecure)
        client = desaccess.DesAccessClient(api, default_url("files_url", files_url), get_credentials(api),
                                           http, database)
        rows, outcomes = _fetch_desaccess(
            client, table, out, desaccess.DesJobOptions(release, bands, width, database), size, workers,
            resume, poll_interval, max_per_job, max_jobs)
    else:
        if "ra" not in table.colnames:
            raise GalmocoError("the Legacy Survey viewer needs ra,dec positions, not COADD_OBJECT_IDs")
        downloads = legacysurvey.cube_downloads(table, out, default_url("url", url), layer, bands, size,
                                                pixscale)
        rows, outcomes = _fetch_legacysurvey(downloads, table, out, workers, resume, http)
    counts = Counter(row["status"] for row in rows + _duplicate_rows(table))
    files = Counter(o.status for o in outcomes)
    result = FetchResult(out, out / SUMMARY_NAME, dict(counts), files["fetched"], files["skipped"])
    log.info("fetch: %s; %d files fetched, %d already present; summary in %s",
             ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), result.files_fetched,
             result.files_skipped, result.summary)
    return result


def _fetch_desaccess(client: desaccess.DesAccessClient, table: Table, out: Path,
                     options: desaccess.DesJobOptions, size: int, workers: int, resume: bool,
                     poll_interval: float, max_per_job: int,
                     max_jobs: int) -> tuple[list[dict], list[Outcome]]:
    """Run the DESaccess jobs for ``table``; returns the summary rows and the file outcomes. The summary
    is written even when interrupted; a failure before anything was written removes the output folder."""
    created = _make_output(out)
    grouped: dict[str, list[Outcome]] = {}
    rows: list[dict] = []
    try:
        try:
            jobs.run_jobs(client, table, out, options, size, workers, resume, poll_interval, max_per_job,
                          max_jobs, grouped)
        finally:
            state_path = out / jobs.STATE_NAME
            if state_path.is_file():
                rows = _des_rows(table, out, json.loads(state_path.read_text()), grouped, options.bands)
                write_summary(rows + _duplicate_rows(table), out)
    except BaseException:
        _remove_empty(out, created)  # e.g. a refused login: nothing was written
        raise
    return rows, [o for group in grouped.values() for o in group]


def _fetch_legacysurvey(downloads: list, table: Table, out: Path, workers: int, resume: bool,
                        http: HttpClient) -> tuple[list[dict], list[Outcome]]:
    """Download the Legacy Survey cubes; returns the summary rows and the file outcomes (the summary is
    written even when interrupted)."""
    _make_output(out)
    outcomes: list[Outcome] = []
    try:
        outcomes = run_downloads(downloads, workers, resume, http, desc="cutouts")
    except FetchInterrupted as exc:
        outcomes = exc.outcomes
        raise
    finally:
        by_key = {o.download.key: [o] for o in outcomes}
        rows = _base_rows(table)
        for row in rows:
            status, reason, n = _row_status(by_key.get(row["id"]), None)
            row.update(status=status, reason=reason, n_files=n)
        write_summary(rows + _duplicate_rows(table), out)
    return rows, outcomes
