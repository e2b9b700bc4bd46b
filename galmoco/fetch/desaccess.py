"""DESaccess sessions: log in, submit and poll cutout jobs, walk and download the job folders.

Speaks the contract in ``shared/reference/des-services.md`` (from des-labs/desaccess-public): form
bodies, ``new_token`` rotation on every reply, errors as ``"status":"error"`` in HTTP 200 replies,
re-login on "Signature has expired", nginx JSON listings. Files land in the job's own layout
``<out>/<jobid>/<TILE>/<POSDIR>/<BASENAME>_<band>.fits``; every server-supplied name (job id,
listing entry) is checked before it becomes part of a path. The job bookkeeping and the server's
limits are in :mod:`galmoco.fetch.jobs`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch.credentials import Credentials
from galmoco.fetch.engine import Download, HttpClient, Outcome, Response, TransientError, run_downloads
from galmoco.fetch.manifest import des_basename
from galmoco.fetch.verify import verify_des_band, verify_json
from galmoco.surveys import DES_PIXEL_SCALE

__all__ = ["DesAccessClient", "DesAccessError", "DesJobOptions", "job_downloads", "fetch_job_files",
           "row_keys", "positions_csv", "unmatched_keys", "outcomes_by_key", "check_jobid", "check_name",
           "DEFAULT_API", "DEFAULT_FILES"]

log = logging.getLogger(__name__)

DEFAULT_API = "https://des.ncsa.illinois.edu/desaccess/api"
DEFAULT_FILES = "https://des.ncsa.illinois.edu/files-desaccess"
_JOBID = re.compile(r"[0-9a-f]{32}")


class DesAccessError(GalmocoError):
    """DESaccess refused a request; the message is the server's (credentials scrubbed)."""


def check_jobid(jobid: object) -> str:
    """A server-supplied job id, checked before it names a folder: exactly 32 lowercase hex characters.

    Raises:
        DesAccessError: anything else (``"../escaped"``, an absolute path, an empty id).
    """
    text = str(jobid)
    if not _JOBID.fullmatch(text):
        raise DesAccessError(f"DESaccess sent job id {text[:80]!r}, not 32 hex characters; refusing to "
                             "use it as a folder name")
    return text


def check_name(name: object, where: str) -> str:
    """A server-supplied file or folder name, checked before it touches the file system.

    Args:
        name: one entry of a listing (a single path component).
        where: what listed it, for the message.

    Raises:
        DesAccessError: empty, ``.``/``..``, or holding a path separator or NUL (so also absolute).
    """
    text = str(name)
    if text in ("", ".", "..") or any(c in text for c in "/\\\0"):
        raise DesAccessError(f"{where}: unsafe name {text[:80]!r} (empty, '..', or a path separator); "
                             "refusing to write it")
    return text


@dataclass(frozen=True)
class DesJobOptions:
    """What every cutout job asks for.

    Attributes:
        release: data release, e.g. ``"dr2"`` (sent upper case).
        bands: FITS bands, subset of ``grizy``.
        arcmin: cutout side in arcmin (0.1 to 12.0).
        database: ``desdr`` on the public server, ``dessci`` on the collaboration server.
    """

    release: str = "dr2"
    bands: str = "griz"
    arcmin: float = 64 * DES_PIXEL_SCALE / 60
    database: str = "desdr"


class DesAccessClient:
    """A logged-in DESaccess session that keeps its token fresh.

    Args:
        api_url: API base, e.g. ``https://des.ncsa.illinois.edu/desaccess/api``.
        files_url: file server base, e.g. ``https://des.ncsa.illinois.edu/files-desaccess``.
        credentials: the DES account.
        http: shared HTTP client (its policy retries network failures, 429 and 5xx).
        database: ``desdr`` (public) or ``dessci`` (collaboration).
    """

    def __init__(self, api_url: str, files_url: str, credentials: Credentials, http: HttpClient,
                 database: str = "desdr") -> None:
        self.api_url = api_url.rstrip("/")
        self.files_url = files_url.rstrip("/")
        self._credentials = credentials
        self.http = http
        self.database = database
        self._token: str | None = None
        self.username = credentials.username

    def _scrub(self, text: str) -> str:
        return text.replace(self._credentials.password, "***") if self._credentials.password else text

    def _send(self, method: str, path: str, fields: dict[str, str], token: str | None,
              resend: bool = True) -> Response:
        """One API request, form-encoded like the official examples; the HTTP client retries it."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self.http.request(method, f"{self.api_url}{path}", body=urlencode(fields).encode(),
                                     headers=headers, resend=resend)
        except TransientError as exc:
            raise DesAccessError(f"DESaccess {path}: no answer ({exc})") from None

    def _json(self, path: str, reply: Response) -> dict:
        try:
            data = json.loads(reply.body)
        except ValueError:
            raise DesAccessError(f"DESaccess {path}: HTTP {reply.status} with a non-JSON reply") from None
        if not isinstance(data, dict):
            raise DesAccessError(f"DESaccess {path}: unexpected reply (HTTP {reply.status})")
        return data

    def login(self) -> None:
        """Log in and keep the token.

        Raises:
            DesAccessError: bad credentials, password to renew, or no answer.
        """
        fields = {"username": self._credentials.username, "password": self._credentials.password,
                  "database": self.database}
        reply = self._send("POST", "/login", fields, None)
        data = self._json("/login", reply)
        if data.get("status") != "ok" or not data.get("token"):
            renew = " (the password must be renewed on the DESaccess site)" if data.get("update") else ""
            message = self._scrub(str(data.get("message", "")))
            raise DesAccessError(f"DESaccess login as {self.username!r} failed: {message}{renew}")
        self._token = data["token"]
        self.username = data.get("username") or self.username
        log.debug("logged in to %s as %s", self.api_url, self.username)

    def call(self, method: str, path: str, fields: dict[str, str], resend: bool = True) -> dict:
        """An authenticated API call; rotates the token and logs in again once when it has expired.

        Args:
            method: HTTP method.
            path: API path, e.g. ``/job/status``.
            fields: form fields.
            resend: retry after the request may have arrived (off for job submission, which must
                not run twice).

        Returns:
            The reply's JSON body (``status`` is ``ok``).

        Raises:
            DesAccessError: ``status`` was ``error`` (even with HTTP 200), with the server's message.
        """
        if self._token is None:
            self.login()
        for retried in (False, True):
            reply = self._send(method, path, fields, self._token, resend)
            data = self._json(path, reply)
            if data.get("new_token"):
                self._token = data["new_token"]
            if data.get("status") == "ok":
                return data
            message = self._scrub(str(data.get("message", "")))
            if message == "Signature has expired" and not retried:
                log.info("DESaccess token expired; logging in again")
                self.login()
                continue
            raise DesAccessError(f"DESaccess {path}: {message} (HTTP {reply.status})")
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(self, positions: str, options: DesJobOptions, job_name: str) -> str:
        """Submit one cutout job.

        Args:
            positions: CSV text, header ``RA,DEC`` or ``COADD_OBJECT_ID``, no trailing newline (the
                server counts newlines against its per-job limit).
            options: release, bands, size.
            job_name: a label shown in the DESaccess job list.

        Returns:
            The job id (32 hex characters).

        Raises:
            DesAccessError: the server refused (its message, e.g. a limit), or sent an id that is not
                32 hex characters (it would name a folder).
        """
        size = f"{options.arcmin:.6f}"
        fields = {"db": options.database, "release": options.release.upper(), "positions": positions,
                  "xsize": size, "ysize": size, "colors_fits": options.bands, "make_fits": "true",
                  "make_rgb_stiff": "false", "make_rgb_lupton": "false", "discard_fits_files": "false",
                  "job_name": job_name}
        return check_jobid(self.call("PUT", "/job/cutout", fields, resend=False).get("jobid"))

    def status(self, jobid: str) -> dict:
        """The job's status record (``job_status`` is init, started, success, failure or unknown)."""
        jobs = self.call("POST", "/job/status", {"job-id": jobid}).get("jobs") or []
        if not jobs:
            raise DesAccessError(f"DESaccess /job/status: job {jobid} unknown (expired after 14 days?)")
        return jobs[0]

    def job_url(self, jobid: str, relpath: str = "") -> str:
        """URL of a job file or folder; ``+`` in tile names is sent as ``%2B``, never as a space."""
        tail = f"/{quote(relpath, safe='/')}" if relpath else ""
        return f"{self.files_url}/{quote(self.username, safe='')}/cutout/{jobid}{tail}"

    def _list_dir(self, jobid: str, relpath: str) -> list[dict]:
        url = self.job_url(jobid, relpath).rstrip("/") + "/json"
        try:
            reply = self.http.request("GET", url)
            entries = json.loads(reply.body) if reply.status == 200 else None
        except (TransientError, ValueError) as exc:
            raise DesAccessError(f"cannot list job {jobid} folder {relpath or '.'!r}: {exc}") from None
        if not isinstance(entries, list):
            raise DesAccessError(f"cannot list job {jobid} folder {relpath or '.'!r}: HTTP {reply.status}"
                                 + ("" if reply.status != 200 else ", not a JSON listing"))
        return [e for e in entries if isinstance(e, dict)]

    def walk(self, jobid: str, workers: int = 8) -> list[str]:
        """Every file of a finished job, as paths relative to the job folder, from the JSON listings.

        Folders of one level are listed in parallel (a 5,000-object job has 5,000 POSDIR folders).

        Raises:
            DesAccessError: a listing fails, or names an entry that could leave the job folder.
        """
        files: list[str] = []
        level = [""]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while level:
                listings = pool.map(lambda rel: (rel, self._list_dir(jobid, rel)), level)
                level = []
                for rel, entries in listings:
                    for entry in entries:
                        where = f"listing of job {jobid} folder {rel or '.'!r}"
                        name = check_name(entry.get("name", ""), where)
                        child = f"{rel}/{name}" if rel else name
                        (level if entry.get("type") == "directory" else files).append(child)
        return sorted(files)


def _no_check(path: Path) -> None:
    """Files with no structure to check (the positions CSV)."""


def _verifier(relpath: str, bands: str, size: int) -> Callable[[Path], object] | None:
    """The integrity check for a job file, or None when the file is not wanted (PNGs, logs)."""
    name = relpath.rsplit("/", 1)[-1]
    if name.endswith(".fits"):
        band = name[:-5].rsplit("_", 1)[-1]
        if band not in bands:
            return None
        return lambda p: verify_des_band(p, band, size)
    if name == "summary.json":
        return verify_json
    if name.startswith("positions_") and name.endswith(".csv"):
        return _no_check
    return None


def job_downloads(client: DesAccessClient, jobid: str, out: Path, bands: str, size: int,
                  workers: int) -> list[Download]:
    """The downloads of one finished job: its FITS in ``bands``, ``summary.json``, the positions CSV.

    Args:
        client: logged-in client.
        jobid: the finished job.
        out: output folder; files go to ``out/<jobid>/<relpath>``.
        bands: wanted bands.
        size: requested side in pixels (edge cutouts may be smaller).
        workers: parallel listing requests.
    """
    folder = out / check_jobid(jobid)
    downloads = []
    for rel in client.walk(jobid, workers):
        check = _verifier(rel, bands, size)
        if check is None:
            continue
        parts = rel.split("/")
        key = parts[1] if len(parts) == 3 else ""  # <TILE>/<POSDIR>/<file>: the object id
        dest = folder.joinpath(*(check_name(p, f"job {jobid} file {rel!r}") for p in parts))
        downloads.append(Download(client.job_url(jobid, rel), dest, check, key))
    return downloads


def row_keys(table: Table) -> list[str]:
    """The POSDIR each manifest row gets: its BASENAME, or its COADD_OBJECT_ID."""
    if "coadd_object_id" in table.colnames:
        return [str(int(v)) for v in table["coadd_object_id"]]
    return [des_basename(float(r), float(d)) for r, d in zip(table["ra"], table["dec"], strict=True)]


def positions_csv(table: Table) -> str:
    """The ``positions`` field for a chunk of the manifest (full float precision, no trailing newline)."""
    if "coadd_object_id" in table.colnames:
        return "\n".join(["COADD_OBJECT_ID", *(str(int(v)) for v in table["coadd_object_id"])])
    pairs = zip(table["ra"], table["dec"], strict=True)
    return "\n".join(["RA,DEC", *(f"{float(r)!r},{float(d)!r}" for r, d in pairs)])


def unmatched_keys(summary: dict) -> set[str]:
    """POSDIR keys of the positions the job reported outside the footprint (``unmatched_positions``)."""
    unmatched = summary.get("unmatched_positions") or {}
    coord = unmatched.get("coord") or {}
    pairs = zip(coord.get("RA", []), coord.get("DEC", []), strict=True)
    keys = {des_basename(float(r), float(d)) for r, d in pairs}
    return keys | {str(int(v)) for v in unmatched.get("coadd", [])}


def outcomes_by_key(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    """Group file outcomes by object (POSDIR)."""
    grouped: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.download.key:
            grouped.setdefault(outcome.download.key, []).append(outcome)
    return grouped


def fetch_job_files(client: DesAccessClient, jobid: str, out: Path, bands: str, size: int, workers: int,
                    resume: bool) -> list[Outcome]:
    """List and download one finished job (see :func:`job_downloads`) with the shared engine."""
    downloads = job_downloads(client, jobid, out, bands, size, workers)
    return run_downloads(downloads, workers, resume, client.http, desc=f"job {jobid[:8]}")
