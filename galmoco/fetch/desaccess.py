"""DESaccess cutout jobs: log in, submit jobs within the service limits, poll, download the job folders.

Speaks the contract in ``shared/reference/des-services.md`` (from des-labs/desaccess-public): form
bodies, ``new_token`` rotation on every reply, errors as ``"status":"error"`` in HTTP 200 replies,
re-login on "Signature has expired", per-job and concurrent-job limits, nginx JSON listings.
Files land in the job's own layout ``<out>/<jobid>/<TILE>/<POSDIR>/<BASENAME>_<band>.fits``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch.credentials import Credentials
from galmoco.fetch.engine import (
    Download,
    FetchInterrupted,
    HttpClient,
    Outcome,
    Response,
    RetryPolicy,
    TransientError,
    atomic_write_bytes,
    run_downloads,
)
from galmoco.fetch.manifest import des_basename
from galmoco.fetch.verify import verify_des_band, verify_json
from galmoco.surveys import DES_PIXEL_SCALE

__all__ = ["DesAccessClient", "DesAccessError", "DesJobOptions", "job_downloads", "fetch_job_files",
           "row_keys", "positions_csv", "unmatched_keys", "outcomes_by_key", "load_state", "run_jobs",
           "DEFAULT_API", "DEFAULT_FILES", "CONCURRENT_LIMIT_TEXT", "STATE_NAME"]

log = logging.getLogger(__name__)

DEFAULT_API = "https://des.ncsa.illinois.edu/desaccess/api"
DEFAULT_FILES = "https://des.ncsa.illinois.edu/files-desaccess"
#: the start of the server's reply when too many jobs are unfinished
CONCURRENT_LIMIT_TEXT = "Number of requested jobs"


class DesAccessError(GalmocoError):
    """DESaccess refused a request; the message is the server's (credentials scrubbed)."""


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
        http: shared HTTP client.
        policy: retries for network failures and 5xx replies.
        database: ``desdr`` (public) or ``dessci`` (collaboration).
    """

    def __init__(self, api_url: str, files_url: str, credentials: Credentials, http: HttpClient,
                 policy: RetryPolicy, database: str = "desdr") -> None:
        self.api_url = api_url.rstrip("/")
        self.files_url = files_url.rstrip("/")
        self._credentials = credentials
        self.http = http
        self.policy = policy
        self.database = database
        self._token: str | None = None
        self.username = credentials.username

    def _scrub(self, text: str) -> str:
        return text.replace(self._credentials.password, "***") if self._credentials.password else text

    def _send(self, method: str, path: str, fields: dict[str, str], token: str | None) -> Response:
        """One API request, form-encoded like the official examples, retried on network errors/5xx."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = urlencode(fields).encode()
        reason = ""
        for attempt in range(self.policy.attempts):
            try:
                reply = self.http.request(method, f"{self.api_url}{path}", body=body, headers=headers)
            except TransientError as exc:
                reason = str(exc)
            else:
                if reply.status < 500 or b"Invalid header string" in reply.body:
                    return reply
                reason = f"HTTP {reply.status}"
            if attempt + 1 < self.policy.attempts:
                time.sleep(self.policy.delay(attempt))
        raise DesAccessError(f"DESaccess {path}: no answer ({reason} after {self.policy.attempts} attempts)")

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

    def call(self, method: str, path: str, fields: dict[str, str]) -> dict:
        """An authenticated API call; rotates the token and logs in again once when it has expired.

        Returns:
            The reply's JSON body (``status`` is ``ok``).

        Raises:
            DesAccessError: ``status`` was ``error`` (even with HTTP 200), with the server's message.
        """
        if self._token is None:
            self.login()
        for retried in (False, True):
            reply = self._send(method, path, fields, self._token)
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
        """
        size = f"{options.arcmin:.6f}"
        fields = {"db": options.database, "release": options.release.upper(), "positions": positions,
                  "xsize": size, "ysize": size, "colors_fits": options.bands, "make_fits": "true",
                  "make_rgb_stiff": "false", "make_rgb_lupton": "false", "discard_fits_files": "false",
                  "job_name": job_name}
        return str(self.call("PUT", "/job/cutout", fields)["jobid"])

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
        reason = ""
        for attempt in range(self.policy.attempts):
            try:
                reply = self.http.request("GET", url)
                if reply.status == 200:
                    return json.loads(reply.body)
                reason = f"HTTP {reply.status}"
                if reply.status < 500:
                    break
            except (TransientError, ValueError) as exc:
                reason = str(exc)
            if attempt + 1 < self.policy.attempts:
                time.sleep(self.policy.delay(attempt))
        raise DesAccessError(f"cannot list job {jobid} folder {relpath or '.'!r}: {reason}")

    def walk(self, jobid: str, workers: int = 8) -> list[str]:
        """Every file of a finished job, as paths relative to the job folder, from the JSON listings.

        Folders of one level are listed in parallel (a 5,000-object job has 5,000 POSDIR folders).
        """
        files: list[str] = []
        level = [""]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while level:
                listings = pool.map(lambda rel: (rel, self._list_dir(jobid, rel)), level)
                level = []
                for rel, entries in listings:
                    for entry in entries:
                        name = str(entry.get("name", ""))
                        if not name or name in (".", "..") or "/" in name:
                            continue  # never follow a name that could leave the folder
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
    downloads = []
    for rel in client.walk(jobid, workers):
        check = _verifier(rel, bands, size)
        if check is None:
            continue
        parts = rel.split("/")
        key = parts[1] if len(parts) == 3 else ""  # <TILE>/<POSDIR>/<file>: the object id
        downloads.append(Download(client.job_url(jobid, rel), out / jobid / rel, check, key))
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
                    policy: RetryPolicy, resume: bool) -> list[Outcome]:
    """List and download one finished job (see :func:`job_downloads`) with the shared engine."""
    downloads = job_downloads(client, jobid, out, bands, size, workers)
    return run_downloads(downloads, workers, policy, resume, client.http, desc=f"job {jobid[:8]}")


STATE_NAME = "fetch_state.json"


def _save_state(out: Path, state: dict) -> None:
    # written atomically after every change, so a SIGKILL never loses a submitted job id
    atomic_write_bytes(out / STATE_NAME, json.dumps(state, indent=1).encode())


def load_state(out: Path, params: dict, chunks: list[tuple[int, int]], resume: bool) -> dict:
    """The job list of this output folder: the saved one on ``resume``, a fresh one otherwise.

    Raises:
        GalmocoError: the folder holds a fetch with other options, or one exists and ``resume`` is off.
    """
    path = out / STATE_NAME
    if path.is_file():
        if not resume:
            raise GalmocoError(f"{out} holds an earlier DESaccess fetch ({STATE_NAME}): pass --resume "
                               "to continue it, or choose another output folder")
        state = json.loads(path.read_text())
        if state.get("params") != params:
            raise GalmocoError(f"{path}: the earlier fetch used other options or another manifest "
                               f"({state.get('params')}); use another output folder")
        for job in state["jobs"]:  # finished jobs are listed again; verified files are skipped
            if job["status"] in ("downloaded", "incomplete"):
                job["status"] = "success"
        return state
    jobs = [{"first": a, "stop": b, "jobid": None, "status": "pending", "message": ""} for a, b in chunks]
    return {"params": params, "jobs": jobs}


def run_jobs(client: DesAccessClient, table: Table, out: Path, options: DesJobOptions, size: int,
             workers: int, policy: RetryPolicy, resume: bool, poll_interval: float, max_per_job: int,
             max_jobs: int, grouped: dict[str, list[Outcome]]) -> dict:
    """Submit the manifest as jobs, poll them with backoff, download each as it finishes.

    At most ``max_jobs`` jobs are unfinished at any time and each holds at most ``max_per_job`` rows.

    Args:
        client: the DESaccess session.
        table: deduplicated manifest (from :func:`galmoco.fetch.manifest.read_manifest`).
        out: output folder.
        options: what each job asks for.
        size: requested side in pixels (for the integrity check).
        workers: parallel downloads.
        policy: retry policy.
        resume: continue the fetch saved in ``out/fetch_state.json``.
        poll_interval: first wait between status polls, seconds (grows 1.5x to 10x this while
            nothing changes).
        max_per_job: rows per job (the server's per-job limit).
        max_jobs: unfinished jobs at once (the server's concurrent-job limit).
        grouped: filled with the file outcomes by POSDIR as jobs are downloaded (also when
            interrupted).

    Returns:
        The state: each job's row slice ``first:stop``, id, status and message.
    """
    chunks = [(a, min(a + max_per_job, len(table))) for a in range(0, len(table), max_per_job)]
    params = {"service": "desaccess", "api": client.api_url, "release": options.release,
              "bands": options.bands, "arcmin": round(options.arcmin, 6), "max_per_job": max_per_job,
              "positions": hashlib.sha256(positions_csv(table).encode()).hexdigest()}
    state = load_state(out, params, chunks, resume)
    jobs = state["jobs"]
    delay = poll_interval
    while any(j["status"] in ("pending", "submitted", "success") for j in jobs):
        changed = False
        for job in (j for j in jobs if j["status"] == "pending"):
            if sum(j["status"] == "submitted" for j in jobs) >= max_jobs:
                break
            try:
                job["jobid"] = client.submit(positions_csv(table[job["first"]:job["stop"]]), options,
                                             f"galmoco-{params['positions'][:8]}-{job['first']}")
            except DesAccessError as exc:
                if CONCURRENT_LIMIT_TEXT not in str(exc):
                    raise
                log.info("DESaccess has other unfinished jobs of this account; waiting")
                break
            job["status"], changed = "submitted", True
            _save_state(out, state)
            log.info("submitted job %s (rows %d-%d)", job["jobid"], job["first"] + 1, job["stop"])
        for job in (j for j in jobs if j["status"] == "submitted"):
            record = client.status(job["jobid"])
            if record.get("job_status") in ("success", "failure"):
                job["status"], changed = record["job_status"], True
                job["message"] = str(record.get("job_status_message", ""))
                _save_state(out, state)
                if job["status"] == "failure":
                    log.error("DESaccess job %s failed: %s", job["jobid"], job["message"])
        for job in (j for j in jobs if j["status"] == "success"):
            try:
                outcomes = fetch_job_files(client, job["jobid"], out, options.bands, size, workers, policy,
                                           resume)
            except FetchInterrupted as exc:
                grouped.update(outcomes_by_key(exc.outcomes))
                raise
            grouped.update(outcomes_by_key(outcomes))
            if all(o.status in ("fetched", "skipped") for o in outcomes):
                job["status"] = "downloaded"
                _save_state(out, state)
            else:
                job["status"] = "incomplete"  # some files failed; a --resume run tries them again
            changed = True
        if not changed:  # jobs still running, or the account's job limit is full: wait
            time.sleep(delay)
            delay = min(delay * 1.5, 10 * poll_interval)
        else:
            delay = poll_interval
    return state
