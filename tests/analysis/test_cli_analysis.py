"""``galmoco embed`` / ``placement`` / ``probe`` as real subprocesses: files, numbers, exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.table import Table

from galmoco.analysis.placement import placement_ranks
from galmoco.data.transforms import PLACEMENT_TRANSFORMS
from galmoco.embed import read_embeddings


def galmoco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galmoco", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_embed_placement_probe_commands(tmp_path, store_path, run_dir):
    run = tmp_path / "run"
    run.mkdir()
    emb = run / "embeddings.fits"
    done = galmoco("embed", run_dir, store_path, "-o", emb, "--transforms", "--device", "cpu",
                   "--batch-size", 7)
    assert done.returncode == 0, done.stderr
    table = read_embeddings(emb)
    assert len(table) == 48 and "latent_antitranspose" in table.colnames

    done = galmoco("placement", run, "--metric", "cosine", "--exclude-column", "class",
                   "--exclude-value", "empty")
    assert done.returncode == 0, done.stderr
    ranks = Table.read(run / "placement_ranks.fits")
    keep = table["class"] != "empty"
    np.testing.assert_array_equal(ranks["flip1"], placement_ranks(table["latent"][keep],
                                                                  table["latent_flip1"][keep], "cosine"))
    summary = Table.read(run / "placement_summary.csv", format="ascii.csv")
    assert list(summary["n_excluded"]) == [16] * len(PLACEMENT_TRANSFORMS)
    assert "flip1" in done.stdout and "rot45" in done.stdout and "rotrand" in done.stdout

    done = galmoco("probe", run, "--columns", "class,hlr_arcsec")
    assert done.returncode == 0, done.stderr
    probes = Table.read(run / "probes.csv", format="ascii.csv")
    assert len(probes) == 4 and set(probes["metric"]) == {"accuracy", "r2"}

    done = galmoco("probe", run, "--columns", "nope")
    assert done.returncode == 1 and "columns not found: nope" in done.stderr
    done = galmoco("placement", run, "--metric", "manhattan")
    assert done.returncode == 2
    done = galmoco("placement", tmp_path, "--metric", "l1")
    assert done.returncode == 1 and "no embeddings" in done.stderr
