"""The README's walkthrough, run as a newcomer would: fetch from the local stand-in, pack, train,
embed, place and report. The commands are read from README.md itself, so the two cannot drift apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from galmoco.distributed import find_free_port
from galmoco.embed import read_embeddings

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    """The first fenced block under the README's "Walkthrough" heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Walkthrough"):]
    return re.search(r"```\n(.*?)```", section, re.S)[1]


def test_walkthrough_block_is_found():
    block = walkthrough()
    for command in ("galmoco fetch", "galmoco pack", "galmoco train", "galmoco embed", "galmoco placement",
                    "galmoco report", "python -m galmoco.fetch.standin", "--allow-insecure"):
        assert command in block


@pytest.mark.slow
def test_readme_walkthrough_runs(tmp_path):
    port = str(find_free_port())
    script = (walkthrough()
              .replace("8765", port)
              .replace("python -m", f"{sys.executable} -m")
              .replace("data_manifests/", f"{ROOT}/data_manifests/")
              .replace("--epochs 5", "--epochs 1"))
    # stop the background server however the script ends; wait until it listens before fetching
    script = ("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n"
              + script.replace(" &\n", f" &\nfor i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/{port}) "
                                        "2>/dev/null && break; sleep 0.2; done\n", 1))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "200 fetched" in proc.stdout + proc.stderr
    table = read_embeddings(tmp_path / "runs" / "mine" / "embeddings.parquet")
    assert len(table) == 200 and "latent_flip1" in table.colnames
    assert (tmp_path / "runs" / "mine" / "placement_summary.csv").is_file()
    assert "<section id=\"placement\">" in (tmp_path / "runs" / "mine" / "report.html").read_text()
