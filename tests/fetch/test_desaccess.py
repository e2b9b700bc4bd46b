"""DESaccess backend against the local server: jobs, limits, tokens, faults, resume, secrecy."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fitsio
import pytest

from galmoco.errors import GalmocoError
from galmoco.fetch import fetch_cutouts
from galmoco.fetch.credentials import Credentials
from galmoco.fetch.desaccess import DesAccessClient, DesJobOptions
from galmoco.fetch.engine import HttpClient
from galmoco.fetch.jobs import run_jobs
from galmoco.fetch.manifest import des_basename, read_manifest
from galmoco.fetch.standin import DesAccessServer, running
from galmoco.fetch.verify import verify_des_band

from .conftest import FAST, PASSWORD, POSITIONS, USER, write_manifest


def _fetch(server, manifest, out, **kwargs):
    return fetch_cutouts(manifest, out, api_url=server.api, files_url=server.files,
                         **{**FAST, "allow_insecure": True, **kwargs})


def _summary(out):
    with open(out / "fetch_summary.csv") as fh:
        return list(csv.DictReader(fh))


def _fits(out):
    return sorted(p for p in out.rglob("*.fits"))


def test_job_layout_summary_edges_and_unmatched(tmp_path, des_server):
    edge = (36.0005, -4.5)  # 6.8 px from a tile edge: trimmed to 39 columns
    rows = [*POSITIONS[:3], edge, (200.0, 50.0), POSITIONS[0]]
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", rows), tmp_path / "out")
    assert result.counts == {"fetched": 4, "out_of_footprint": 1, "duplicate": 1}
    out = tmp_path / "out"
    (jobdir,) = [p for p in out.iterdir() if p.is_dir()]
    assert (jobdir / "summary.json").is_file() and (jobdir / f"positions_{jobdir.name}.csv").is_file()
    assert not list(out.rglob("*.log")) and not list(out.rglob(".*"))  # no temporary file left
    files = _fits(out)
    assert len(files) == 16
    plus = jobdir / "DES0126+0330" / des_basename(*POSITIONS[0])
    assert sorted(p.name[-6:] for p in plus.iterdir()) == ["g.fits", "i.fits", "r.fits", "z.fits"]
    for path in files:
        verify_des_band(path, path.stem[-1], 64)
    edge_file = next(p for p in files if p.parent.name == des_basename(*edge))
    assert fitsio.read(str(edge_file)).shape == (64, 39)
    summary = _summary(out)
    assert [r["status"] for r in summary] == ["fetched"] * 4 + ["out_of_footprint", "duplicate"]
    assert summary[4]["reason"].startswith("unmatched_positions")
    assert summary[5]["reason"] == "same object as row 1"


def test_coadd_id_manifest(tmp_path, des_server):
    des_server.coadd_catalog = {61407318: (36.5, -4.5)}
    manifest = write_manifest(tmp_path / "m.csv", [(61407318,), (99,)], "COADD_OBJECT_ID")
    result = _fetch(des_server, manifest, tmp_path / "out", bands="gr")
    assert result.counts == {"fetched": 1, "out_of_footprint": 1}
    assert {p.parent.name for p in _fits(tmp_path / "out")} == {"61407318"}


def test_limits_are_never_exceeded(tmp_path, des_server):
    des_server.max_per_job, des_server.max_jobs, des_server.job_seconds = 3, 2, 0.1
    rows = [(10 + i * 0.1, -5.25) for i in range(10)]
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", rows), tmp_path / "out",
                    max_per_job=3, max_jobs=2, bands="g")
    assert result.counts == {"fetched": 10}
    assert des_server.rejections == [] and len(des_server.jobs) == 4


def test_other_unfinished_jobs_make_the_client_wait(tmp_path, des_server):
    des_server.max_jobs, des_server.job_seconds = 1, 0.3
    other = DesAccessClient(des_server.api, des_server.files, Credentials(USER, PASSWORD), HttpClient())
    other.submit("RA,DEC\n10.5,-5.5", DesJobOptions(), "elsewhere")  # still running when the fetch starts
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), tmp_path / "out",
                    max_per_job=1, bands="g", poll_interval=0.05)
    assert result.counts == {"fetched": 2} and "concurrent" in des_server.rejections
    assert len(des_server.jobs) == 3


def test_token_expiry_mid_run_logs_in_again(tmp_path, des_server):
    # tokens outlive the gap between a login and the next call even on a loaded machine, not a poll backoff
    des_server.token_lifetime, des_server.job_seconds = 0.2, 1.0
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), tmp_path / "out",
                    poll_interval=0.1, bands="g")
    assert result.counts == {"fetched": 2} and des_server.logins >= 2


@pytest.mark.parametrize("message", ["Signature verification failed", "Missing authorization"])
def test_auth_error_in_http_200_is_an_error(tmp_path, des_server, message):
    des_server.auth_error = message
    with pytest.raises(GalmocoError, match=f"/job/cutout: {message} \\(HTTP 200\\)"):
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), tmp_path / "out")


def test_failed_job_is_reported_with_its_message(tmp_path, des_server):
    des_server.fail_next_jobs = 1
    result = _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:4]), tmp_path / "out",
                    max_per_job=2, bands="g")
    assert result.counts == {"failed": 2, "fetched": 2}
    summary = _summary(tmp_path / "out")
    assert summary[0]["status"] == "failed"
    assert "Cutout job crashed: tile DB unavailable" in summary[0]["reason"]


def test_file_faults_are_survived(tmp_path, des_server):
    for band, kind in zip("griz", ("drop", "500", "truncate", "corrupt"), strict=True):
        des_server.faults.add(f"_{band}.fits", kind, kind)
    des_server.faults.add("/json", "500", "drop")
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:3])
    result = _fetch(des_server, manifest, tmp_path / "out", workers=2)
    assert result.counts == {"fetched": 3}
    for path in _fits(tmp_path / "out"):
        verify_des_band(path, path.stem[-1], 64)


def test_credentials_never_leak(tmp_path, des_server, caplog):
    caplog.set_level(logging.DEBUG)
    _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), tmp_path / "out", bands="g")
    os.environ["DESACCESS_PASSWORD"] = PASSWORD + "-wrong"
    with pytest.raises(GalmocoError) as info:
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), tmp_path / "out2")
    assert "login as 'alice' failed" in str(info.value)
    for text in [str(info.value), repr(info.value), caplog.text,
                 *(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())]:
        assert PASSWORD not in text


def test_netrc_credentials(tmp_path, des_server, monkeypatch):
    monkeypatch.delenv("DESACCESS_USER")
    monkeypatch.delenv("DESACCESS_PASSWORD")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(GalmocoError, match="DESACCESS_USER and DESACCESS_PASSWORD"):
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), tmp_path / "out")
    (tmp_path / "netrc").write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    assert _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), tmp_path / "out",
                  bands="g").counts == {"fetched": 1}


def test_resume_needs_the_flag_and_the_same_options(tmp_path, des_server):
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:2])
    _fetch(des_server, manifest, tmp_path / "out", bands="g")
    with pytest.raises(GalmocoError, match="pass --resume"):
        _fetch(des_server, manifest, tmp_path / "out", bands="g")
    with pytest.raises(GalmocoError, match="other options"):
        _fetch(des_server, manifest, tmp_path / "out", bands="gr", resume=True)
    result = _fetch(des_server, manifest, tmp_path / "out", bands="g", resume=True)
    assert result.counts == {"skipped": 2} and len(des_server.jobs) == 1


@pytest.mark.slow
def test_sigkill_then_resume_fetches_every_file_once(tmp_path, des_server):
    des_server.hold_after = 10  # serve 10 files, then hang every file request until the kill
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "galmoco", "fetch", str(manifest), "-o", str(out), "--max-per-job", "4",
           "--workers", "3", "--poll-interval", "0.01", "--api-url", des_server.api,
           "--files-url", des_server.files, "--timeout", "60", "--allow-insecure"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sum(des_server.served.values()) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the client is now blocked on held requests
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    des_server.hold.set()
    delivered = [k for k in des_server.served if k.endswith(".fits")]
    assert 0 < len(_fits(out)) == len(delivered) < 32  # every delivered file was kept, nothing else
    des_server.hold_after = None
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = _fits(out)
    assert len(files) == 32
    for path in files:
        verify_des_band(path, path.stem[-1], 64)
    fits_gets = {k: v for k, v in des_server.served.items() if k.endswith(".fits")}
    assert len(fits_gets) == 32 and set(fits_gets.values()) == {1}
    assert des_server.requests[("PUT", "/desaccess/api/job/cutout")] == 2
    state = json.loads((out / "fetch_state.json").read_text())
    assert [j["status"] for j in state["jobs"]] == ["downloaded", "downloaded"]
    assert not list(Path(out).rglob(".*"))


class _HostileJobIds(DesAccessServer):
    """Replies to every job submission with the same chosen job id."""

    def __init__(self, users, jobid):
        super().__init__(users)
        self.hostile_jobid = jobid

    def build_job(self, job):
        job.jobid = self.hostile_jobid
        return super().build_job(job)


class _HostileListing(DesAccessServer):
    """Adds one entry with a chosen name to the job folder's listing."""

    def __init__(self, users, name):
        super().__init__(users)
        self.hostile_name = name

    def listing(self, job, prefix):
        return [*super().listing(job, prefix), {"name": self.hostile_name, "type": "file", "size": 0}]


def _outside(root: Path, out: Path) -> list[Path]:
    """Files under ``root`` that are not under ``out`` (nor the manifest)."""
    return [p for p in root.rglob("*") if p.is_file() and out not in p.parents and p.suffix != ".csv"]


@pytest.mark.parametrize("jobid", ["../escaped", "/ABSOLUTE", "0" * 31 + "/"])
def test_hostile_job_id_is_refused_and_nothing_leaves_the_output(tmp_path, monkeypatch, jobid):
    monkeypatch.setenv("DESACCESS_USER", USER)
    monkeypatch.setenv("DESACCESS_PASSWORD", PASSWORD)
    if jobid.startswith("/"):
        jobid = str(tmp_path / "absolute")
    out = tmp_path / "a" / "out"
    with running(_HostileJobIds({USER: PASSWORD}, jobid)) as server:
        with pytest.raises(GalmocoError, match="not 32 hex characters; refusing"):
            _fetch(server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), out, bands="g")
    assert _outside(tmp_path, out) == [] and not (tmp_path / "a" / "escaped").exists()
    assert not (tmp_path / "absolute").exists()


@pytest.mark.parametrize("name", ["..", "../../escaped_g.fits", "/ABSOLUTE_g.fits", "..\\escaped_g.fits"])
def test_hostile_listing_name_is_refused_and_nothing_leaves_the_output(tmp_path, monkeypatch, name):
    monkeypatch.setenv("DESACCESS_USER", USER)
    monkeypatch.setenv("DESACCESS_PASSWORD", PASSWORD)
    name = name.replace("/ABSOLUTE", str(tmp_path / "absolute"))
    out = tmp_path / "a" / "out"
    with running(_HostileListing({USER: PASSWORD}, name)) as server:
        with pytest.raises(GalmocoError, match=r"listing of job [0-9a-f]{32} folder '\.': unsafe name"):
            _fetch(server, write_manifest(tmp_path / "m.csv", POSITIONS[:2]), out, bands="g")
    assert _outside(tmp_path, out) == [] and not list(out.rglob("*.fits"))


def test_credentials_over_plain_http_are_refused(tmp_path, des_server, monkeypatch):
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:1])
    pattern = (r"^--api-url http://127\.0\.0\.1:\d+/desaccess/api: refusing to send DES credentials over "
               r"unencrypted http://; use https://, or pass --allow-insecure")
    with pytest.raises(GalmocoError, match=pattern):
        _fetch(des_server, manifest, tmp_path / "out", allow_insecure=False)
    assert sum(des_server.requests.values()) == 0 and not (tmp_path / "out").exists()
    command = [sys.executable, "-m", "galmoco", "fetch", str(manifest), "-o", str(tmp_path / "out"),
               "--api-url", des_server.api]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--allow-insecure" in done.stderr
    assert sum(des_server.requests.values()) == 0
    # GALMOCO_ALLOW_INSECURE=1 allows it too (a notebook pointed at the stand-in by the environment)
    monkeypatch.setenv("GALMOCO_ALLOW_INSECURE", "1")
    result = _fetch(des_server, manifest, tmp_path / "out", allow_insecure=False, bands="g")
    assert result.counts == {"fetched": 1}


def _unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in: read-only for a user, /sys for root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe").touch()
            (candidate / "probe").unlink()
        except OSError:
            return candidate
    pytest.skip("no unwritable folder available")


def test_unwritable_output_is_refused_before_any_request(tmp_path, des_server):
    out = _unwritable_folder(tmp_path)
    with pytest.raises(GalmocoError, match=f"^-o {out}: the output folder is not writable"):
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), out)
    assert sum(des_server.requests.values()) == 0 and des_server.jobs == {}


def test_failed_login_leaves_no_output_folder(tmp_path, des_server, monkeypatch):
    monkeypatch.setenv("DESACCESS_PASSWORD", "wrong")
    with pytest.raises(GalmocoError, match="login as 'alice' failed"):
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that existed before is kept, empty or not
    with pytest.raises(GalmocoError, match="login as 'alice' failed"):
        _fetch(des_server, write_manifest(tmp_path / "m.csv", POSITIONS[:1]), tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()


def test_job_ids_are_saved_before_anything_else(tmp_path, des_server):
    des_server.job_seconds = 0.3
    out = tmp_path / "out"
    seen = []

    class Watching(DesAccessClient):
        def status(self, jobid):  # the first thing after a submission: the id must be on disk by now
            seen.append(json.loads((out / "fetch_state.json").read_text())["jobs"][0]["jobid"])
            return super().status(jobid)

    client = Watching(des_server.api, des_server.files, Credentials(USER, PASSWORD), HttpClient())
    table = read_manifest(write_manifest(tmp_path / "m.csv", POSITIONS[:1]))
    out.mkdir()
    run_jobs(client, table, out, DesJobOptions(bands="g"), 64, 2, False, 0.01, 10, 1, {})
    assert seen and set(seen) == set(des_server.jobs)
