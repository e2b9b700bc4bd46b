"""``galmoco fetch`` end to end in a subprocess against the local servers; the result packs unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import PASSWORD, POSITIONS, USER, write_manifest


def _run(args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "galmoco", "fetch", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, **kwargs)


def test_help_has_no_credential_options():
    done = _run(["--help"])
    assert done.returncode == 0 and "--resume" in done.stdout and "GALMOCO_DESACCESS_API" in done.stdout
    assert "password" not in done.stdout.lower().replace("desaccess_password", "")


@pytest.mark.slow
def test_legacysurvey_end_to_end_and_errors(tmp_path, legacy_server):
    manifest = write_manifest(tmp_path / "m.csv", POSITIONS[:3])
    done = _run([str(manifest), "-o", str(tmp_path / "out"), "--service", "legacysurvey", "--size", "32"],
                env={"GALMOCO_LEGACYSURVEY_URL": legacy_server.viewer})
    assert done.returncode == 0, done.stderr
    assert "3 fetched" in done.stdout and len(list((tmp_path / "out").glob("*.fits"))) == 3
    bad = write_manifest(tmp_path / "bad.csv", [(1, 2), (400, 3)])
    done = _run([str(bad), "-o", str(tmp_path / "o2"), "--service", "legacysurvey"])
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: {bad}: row 2: ra 400.0 is outside [0, 360)"
    done = _run([str(manifest), "-o", str(tmp_path / "o3"), "--size", "32", "--arcmin", "0.5"])
    assert done.returncode == 2 and "not both" in done.stderr


@pytest.mark.slow
def test_desaccess_end_to_end_packs_unchanged(tmp_path, des_server):
    pack = pytest.importorskip("galmoco.io.pack")
    edge = (36.0005, -4.5)  # a trimmed cutout: pack must handle it
    manifest = write_manifest(tmp_path / "m.csv", [*POSITIONS[:4], edge, (200.0, 50.0)])
    env = {"GALMOCO_DESACCESS_API": des_server.api, "GALMOCO_DESACCESS_FILES": des_server.files,
           "DESACCESS_USER": USER, "DESACCESS_PASSWORD": PASSWORD}
    done = _run([str(manifest), "-o", str(tmp_path / "out"), "--poll-interval", "0.01", "--max-per-job", "3",
                 "--allow-insecure"], env=env)
    assert done.returncode == 0, done.stderr
    assert "5 fetched, 1 out_of_footprint" in done.stdout and PASSWORD not in done.stdout + done.stderr
    result = pack.pack_cutouts(tmp_path / "out", tmp_path / "store.h5", bands="griz", size=64, pad=True)
    from galmoco.io.store import read_catalog

    catalog = read_catalog(tmp_path / "store.h5")
    assert len(catalog) == 5, result
    assert sorted(catalog["id"]) == sorted(
        __import__("galmoco.fetch.manifest", fromlist=["x"]).des_basename(*p) for p in [*POSITIONS[:4], edge])


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(tmp_path, legacy_server):
    import signal
    import time

    legacy_server.latency = 0.2
    manifest = write_manifest(tmp_path / "m.csv", [(10 + i * 0.01, -5.0) for i in range(60)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "galmoco", "fetch", str(manifest), "-o", str(out),
                             "--service", "legacysurvey", "--size", "32", "--workers", "2",
                             "--url", legacy_server.viewer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            # a background job of a non-interactive shell (as CI may be) inherits SIGINT
                            # ignored, and Python keeps it so: give the child the default a terminal has
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while sum(legacy_server.served.values()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # click reports it as "Aborted."
    statuses = [line.split(",")[5] for line in (out / "fetch_summary.csv").read_text().splitlines()[1:]]
    fetched = statuses.count("fetched")
    assert fetched >= 4 and statuses.count("pending") == 60 - fetched
    assert len(list(out.glob("*.fits"))) == fetched and not list(out.glob(".*"))  # no temporary file left
