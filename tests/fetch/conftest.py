"""Fixtures for the fetch tests: the local DESaccess and Legacy Survey servers, manifests, fast settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from galmoco.fetch.standin import DesAccessServer, LegacySurveyServer, running

PASSWORD = "s3cret-Pa55word"
USER = "alice"
#: settings that make retries and polls take milliseconds
FAST = {"poll_interval": 0.01, "retries": 4, "timeout": 1.0, "backoff": 0.01}


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "no_proxy", "all_proxy", "GALMOCO_ALLOW_INSECURE")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_caller(monkeypatch):
    """The local servers are reached directly unless a test sets a proxy itself."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def des_server(monkeypatch):
    server = DesAccessServer({USER: PASSWORD})
    monkeypatch.setenv("DESACCESS_USER", USER)
    monkeypatch.setenv("DESACCESS_PASSWORD", PASSWORD)
    with running(server):
        yield server


@pytest.fixture
def legacy_server():
    with running(LegacySurveyServer()) as server:
        yield server


def write_manifest(path: Path, rows: list[tuple], header: str = "ra,dec") -> Path:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


#: positions inside the test footprint, away from 1-degree cell edges
POSITIONS = [(21.58813, 3.48611), (36.5, -4.5), (150.3, 2.2), (10.45, -43.6), (55.2, -30.7),
             (70.6, -50.4), (320.25, -0.55), (5.5, -20.5)]


def pytest_configure(config):
    # the servers write RA_CUTOUT/DEC_CUTOUT as HIERARCH cards, like DES files; astropy warns each time
    config.addinivalue_line("filterwarnings", "ignore:Keyword name:astropy.io.fits.verify.VerifyWarning")
