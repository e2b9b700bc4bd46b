"""DESaccess job bookkeeping: the server's own limits are learned from its refusals, also on --resume."""

from __future__ import annotations

import json

import pytest

from galmoco.errors import GalmocoError
from galmoco.fetch import fetch_cutouts
from galmoco.fetch.jobs import CONCURRENT_LIMIT, PER_JOB_LIMIT, server_limit, split_jobs
from galmoco.fetch.standin import DesAccessServer, running

from .conftest import FAST, PASSWORD, USER, write_manifest

ROWS = [(10 + i * 0.1, -5.25) for i in range(10)]


def _fetch(server, manifest, out, **kwargs):
    return fetch_cutouts(manifest, out, api_url=server.api, files_url=server.files, bands="g",
                         **{**FAST, "allow_insecure": True, **kwargs})


def test_limits_are_read_from_the_servers_own_words():
    per_job = "Number of requested cutouts (5000) exceeds the maximum allowed per job request (1000)."
    concurrent = "Number of requested jobs (11) exceeds the maximum allowed concurrent jobs (10)."
    assert server_limit(PER_JOB_LIMIT, f"DESaccess /job/cutout: {per_job} (HTTP 200)") == 1000
    assert server_limit(CONCURRENT_LIMIT, concurrent) == 10
    assert server_limit(PER_JOB_LIMIT, concurrent) is None and server_limit(CONCURRENT_LIMIT, "other") is None
    with pytest.raises(GalmocoError, match="allows 0 per request"):
        server_limit(CONCURRENT_LIMIT, concurrent.replace("(10)", "(0)"))


def test_split_jobs_splits_only_pending_jobs():
    jobs = [{"first": 0, "stop": 5, "status": "submitted"}, {"first": 5, "stop": 10, "status": "pending"}]
    assert [(j["first"], j["stop"], j["status"]) for j in split_jobs(jobs, 2)] == [
        (0, 5, "submitted"), (5, 7, "pending"), (7, 9, "pending"), (9, 10, "pending")]


def test_a_server_with_lower_limits_is_obeyed_and_the_fetch_finishes(tmp_path, des_server):
    des_server.max_per_job, des_server.max_jobs, des_server.job_seconds = 3, 1, 0.05
    out = tmp_path / "out"
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", ROWS), out, max_per_job=5, max_jobs=4)
    assert result.counts == {"fetched": 10} and len(list(out.rglob("*.fits"))) == 10
    # each limit was met once, then kept: the two 5-row jobs split into 3 + 2, one at a time
    assert des_server.rejections == [
        "Number of requested cutouts (5) exceeds the maximum allowed per job request (3).", "concurrent"]
    assert sorted(len(job.rows) for job in des_server.jobs.values()) == [2, 2, 3, 3]
    state = json.loads((out / "fetch_state.json").read_text())
    assert state["limits"] == {"per_job": 3, "jobs": 1}


class _RefusesAfterOneJob(DesAccessServer):
    """While ``armed``, accepts one job, then answers every authenticated call with an auth error."""

    armed = True

    def build_job(self, job):
        if self.armed:
            self.auth_error = "Signature verification failed"
        return super().build_job(job)


def test_resume_learns_a_lower_limit_and_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("DESACCESS_USER", USER)
    monkeypatch.setenv("DESACCESS_PASSWORD", PASSWORD)
    manifest, out = write_manifest(tmp_path / "m.csv", ROWS), tmp_path / "out"
    with running(_RefusesAfterOneJob({USER: PASSWORD}, job_seconds=0.05)) as server:
        with pytest.raises(GalmocoError, match="Signature verification failed"):
            _fetch(server, manifest, out, max_per_job=5)
        state = json.loads((out / "fetch_state.json").read_text())
        assert [j["status"] for j in state["jobs"]] == ["submitted", "pending"]
        server.armed, server.auth_error, server.max_per_job = False, None, 2
        result = _fetch(server, manifest, out, max_per_job=5, resume=True)
    assert result.counts == {"fetched": 10} and len(list(out.rglob("*.fits"))) == 10
    assert sorted(len(job.rows) for job in server.jobs.values()) == [1, 2, 2, 5]
    state = json.loads((out / "fetch_state.json").read_text())
    assert state["limits"]["per_job"] == 2 and {j["status"] for j in state["jobs"]} == {"downloaded"}
