"""DESaccess job bookkeeping: split the manifest into jobs within the server's limits, submit, poll, download.

The job list lives in ``<out>/fetch_state.json``, written atomically after every change (a job id
is saved before anything else happens, so a SIGKILL never loses a job that counts against the
account). The server's own limits are learned from its refusals ("Number of requested cutouts (N)
exceeds the maximum allowed per job request (L)." and "Number of requested jobs (N) exceeds the
maximum allowed concurrent jobs (L).", see ``shared/reference/des-services.md``): pending jobs are
split to L rows, or at most L jobs are kept unfinished, and the limits are saved so ``--resume``
starts from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.fetch.desaccess import (
    DesAccessClient,
    DesAccessError,
    DesJobOptions,
    check_jobid,
    fetch_job_files,
    outcomes_by_key,
    positions_csv,
)
from galmoco.fetch.engine import FetchInterrupted, Outcome
from galmoco.files import atomic_write_text

__all__ = ["STATE_NAME", "PER_JOB_LIMIT", "CONCURRENT_LIMIT", "server_limit", "split_jobs", "load_state",
           "run_jobs"]

log = logging.getLogger(__name__)

STATE_NAME = "fetch_state.json"
#: the server's refusals, with its limit L in the last group
PER_JOB_LIMIT = re.compile(r"Number of requested cutouts \(\d+\) exceeds the maximum allowed per job request "
                           r"\((\d+)\)")
CONCURRENT_LIMIT = re.compile(r"Number of requested jobs \(\d+\) exceeds the maximum allowed concurrent jobs "
                              r"\((\d+)\)")


def server_limit(pattern: re.Pattern, message: str) -> int | None:
    """The limit L a refusal names, or None when ``message`` is not that refusal.

    Raises:
        DesAccessError: the server states a limit below 1 (nothing could ever be submitted).
    """
    match = pattern.search(message)
    if match is None:
        return None
    limit = int(match[1])
    if limit < 1:
        raise DesAccessError(f"DESaccess allows {limit} per request: {message}")
    return limit


def split_jobs(jobs: list[dict], per_job: int) -> list[dict]:
    """Split every pending job holding more than ``per_job`` rows; other jobs are kept as they are."""
    result = []
    for job in jobs:
        if job["status"] != "pending" or job["stop"] - job["first"] <= per_job:
            result.append(job)
            continue
        result.extend({**job, "first": a, "stop": min(a + per_job, job["stop"])}
                      for a in range(job["first"], job["stop"], per_job))
    return result


def _save_state(out: Path, state: dict) -> None:
    path = out / STATE_NAME
    try:
        atomic_write_text(path, json.dumps(state, indent=1))
    except OSError as exc:
        ids = [j["jobid"] for j in state["jobs"] if j["jobid"] and j["status"] == "submitted"]
        raise GalmocoError(f"{path}: cannot write the job list ({exc.strerror or exc}); submitted job(s) "
                           f"{', '.join(ids) or 'none'} are not recorded") from None


def load_state(out: Path, params: dict, n_rows: int, max_per_job: int, resume: bool) -> dict:
    """The job list of this output folder: the saved one on ``resume``, a fresh one otherwise.

    Args:
        out: output folder.
        params: what the fetch asks for (must equal the saved fetch's on resume).
        n_rows: manifest rows (after removing duplicates).
        max_per_job: rows per job of a fresh list.
        resume: continue the saved fetch.

    Returns:
        ``{"params", "limits": {"per_job", "jobs"}, "jobs": [{"first", "stop", "jobid", "status",
        "message"}]}``; ``limits`` holds the server's limits learned so far (None: not met yet).

    Raises:
        GalmocoError: the folder holds a fetch with other options, or one exists and ``resume`` is off,
            or the saved list names a job id that is not 32 hex characters.
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
        state.setdefault("limits", {"per_job": None, "jobs": None})
        for job in state["jobs"]:
            if job["jobid"] is not None:
                check_jobid(job["jobid"])
            if job["status"] in ("downloaded", "incomplete"):  # listed again; verified files are skipped
                job["status"] = "success"
        return state
    jobs = [{"first": a, "stop": min(a + max_per_job, n_rows), "jobid": None, "status": "pending",
             "message": ""} for a in range(0, n_rows, max_per_job)]
    return {"params": params, "limits": {"per_job": None, "jobs": None}, "jobs": jobs}


def _submit_pending(client: DesAccessClient, table: Table, out: Path, state: dict, options: DesJobOptions,
                    max_per_job: int, max_jobs: int, label: str) -> bool:
    """Submit pending jobs while slots are free; learn the server's limits from its refusals.

    Returns:
        Whether a job was submitted.
    """
    limits, submitted = state["limits"], False
    while True:
        per_job = min(max_per_job, limits["per_job"] or max_per_job)
        state["jobs"] = split_jobs(state["jobs"], per_job)
        cap = min(max_jobs, limits["jobs"] or max_jobs)
        job = next((j for j in state["jobs"] if j["status"] == "pending"), None)
        if job is None or sum(j["status"] == "submitted" for j in state["jobs"]) >= cap:
            return submitted
        try:
            jobid = client.submit(positions_csv(table[job["first"]:job["stop"]]), options,
                                  f"{label}-{job['first']}")
        except DesAccessError as exc:
            per_job_limit = server_limit(PER_JOB_LIMIT, str(exc))
            if per_job_limit is not None and per_job_limit < job["stop"] - job["first"]:
                log.warning("DESaccess allows %d cutouts per job: splitting the jobs left", per_job_limit)
                limits["per_job"] = per_job_limit
                _save_state(out, state)
                continue
            jobs_limit = server_limit(CONCURRENT_LIMIT, str(exc))
            if jobs_limit is None:
                raise
            if limits["jobs"] != jobs_limit:
                log.warning("DESaccess allows %d unfinished jobs per account: waiting for a slot", jobs_limit)
                limits["jobs"] = jobs_limit
                _save_state(out, state)
            return submitted  # other jobs of the account hold the slots: wait for one to finish
        job["jobid"], job["status"], submitted = jobid, "submitted", True
        _save_state(out, state)  # before anything else: the job counts against the account
        log.info("submitted job %s (rows %d-%d)", jobid, job["first"] + 1, job["stop"])


def run_jobs(client: DesAccessClient, table: Table, out: Path, options: DesJobOptions, size: int,
             workers: int, resume: bool, poll_interval: float, max_per_job: int, max_jobs: int,
             grouped: dict[str, list[Outcome]]) -> dict:
    """Submit the manifest as jobs, poll them with backoff, download each as it finishes.

    At most ``max_jobs`` jobs (or the server's lower limit) are unfinished at any time and each holds
    at most ``max_per_job`` rows (or the server's lower limit).

    Args:
        client: the DESaccess session (logged in here, before anything is written).
        table: deduplicated manifest (from :func:`galmoco.fetch.manifest.read_manifest`).
        out: output folder (exists and is writable).
        options: what each job asks for.
        size: requested side in pixels (for the integrity check).
        workers: parallel downloads.
        resume: continue the fetch saved in ``out/fetch_state.json``.
        poll_interval: first wait between status polls, seconds (grows 1.5x to 10x this while
            nothing changes).
        max_per_job: rows per job (lowered to the server's limit when it refuses more).
        max_jobs: unfinished jobs at once (lowered to the server's limit when it refuses more).
        grouped: filled with the file outcomes by POSDIR as jobs are downloaded (also when
            interrupted).

    Returns:
        The state: each job's row slice ``first:stop``, id, status and message; the learned limits.
    """
    digest = hashlib.sha256(positions_csv(table).encode()).hexdigest()
    params = {"service": "desaccess", "api": client.api_url, "release": options.release,
              "bands": options.bands, "arcmin": round(options.arcmin, 6), "max_per_job": max_per_job,
              "positions": digest}
    state = load_state(out, params, len(table), max_per_job, resume)
    client.login()
    _save_state(out, state)
    delay = poll_interval
    while any(j["status"] in ("pending", "submitted", "success") for j in state["jobs"]):
        changed = _submit_pending(client, table, out, state, options, max_per_job, max_jobs,
                                  f"galmoco-{digest[:8]}")
        for job in (j for j in state["jobs"] if j["status"] == "submitted"):
            record = client.status(job["jobid"])
            if record.get("job_status") in ("success", "failure"):
                job["status"], changed = record["job_status"], True
                job["message"] = str(record.get("job_status_message", ""))
                _save_state(out, state)
                if job["status"] == "failure":
                    log.error("DESaccess job %s failed: %s", job["jobid"], job["message"])
        for job in (j for j in state["jobs"] if j["status"] == "success"):
            try:
                outcomes = fetch_job_files(client, job["jobid"], out, options.bands, size, workers, resume)
            except FetchInterrupted as exc:
                grouped.update(outcomes_by_key(exc.outcomes))
                raise
            grouped.update(outcomes_by_key(outcomes))
            complete = all(o.status in ("fetched", "skipped") for o in outcomes)
            job["status"] = "downloaded" if complete else "incomplete"  # --resume tries failed files again
            _save_state(out, state)
            changed = True
        if not changed:  # jobs still running, or the account's job limit is full: wait
            time.sleep(delay)
            delay = min(delay * 1.5, 10 * poll_interval)
        else:
            delay = poll_interval
    return state
