"""``python -m galmoco.fetch.standin``: the stand-in a pip-installed user runs for the README walkthrough."""

from __future__ import annotations

import subprocess
import sys

from galmoco.fetch import fetch_cutouts

from .conftest import POSITIONS, write_manifest


def test_module_serves_the_viewer_until_stopped(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "galmoco.fetch.standin", "legacysurvey", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        option, url = proc.stdout.readline().split()
        assert option == "--url" and url.startswith("http://127.0.0.1:")
        result = fetch_cutouts(write_manifest(tmp_path / "m.csv", POSITIONS[:2]), tmp_path / "out",
                               service="legacysurvey", url=url, size=16, bands="gr")
        assert result.counts == {"fetched": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
