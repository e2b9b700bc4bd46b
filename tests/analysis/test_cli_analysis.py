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


@pytest.mark.slow
def test_placement_options_space_second_observation_and_breakdown(tmp_path, store_path, run_dir):
    from astropy.table import vstack

    from galmoco.io.tables import write_table

    first = tmp_path / "first.parquet"
    done = galmoco("embed", run_dir, store_path, "-o", first, "--transforms", "--angles", "30,rand",
                   "--projection", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    table = read_embeddings(first)
    assert {"latent_rot30", "projection_rot30", "projection_rotrand", "angle_rotrand", "stamp_snr"} <= set(
        table.colnames) and "latent_rot45" not in table.colnames
    again = tmp_path / "again.parquet"
    write_table(table[2:], again)  # obj000 and obj001 were not observed again
    out = tmp_path / "out"
    done = galmoco("placement", first, "--space", "projection", "--observed-again", again, "--out-dir", out,
                   "--metric", "l2")
    assert done.returncode == 0, done.stderr
    assert "observed again: 46 ids matched; 2 only in the embeddings table (e.g. obj000, obj001); 0 only" in (
        done.stdout)
    summary = Table.read(out / "placement_summary.csv", format="ascii.csv")
    row = summary[list(summary["transform"]).index("observed_again")]
    assert row["n"] == 46 and row["n_missing"] == 2 and row["frac_rank1"] == 1.0
    assert row["space"] == "projection"
    breakdown = Table.read(out / "placement_breakdown.csv", format="ascii.csv")
    assert set(breakdown["column"]) == {"stamp_snr"} and "Rank-1 fraction by stamp_snr bin" in done.stdout
    done = galmoco("placement", first, "--breakdown-column", "stamp_snr", "--breakdown-edges", "0,1e6",
                   "--out-dir", out)
    assert done.returncode == 0, done.stderr
    breakdown = Table.read(out / "placement_breakdown.csv", format="ascii.csv")
    assert list(dict.fromkeys(breakdown["bin"])) == ["<0", "0-1e+06", ">1e+06"]
    assert set(breakdown["column"]) == {"stamp_snr"}
    flip1 = breakdown[breakdown["transform"] == "flip1"]
    assert flip1["n"].sum() == 48 and flip1["n"][2] == 0  # every stamp in a bin, none above 1e6
    write_table(vstack([table, table[:1]]), again)
    done = galmoco("placement", first, "--observed-again", again, "--out-dir", out)
    assert done.returncode == 1 and "1 ids occur more than once (e.g. obj000)" in done.stderr
    done = galmoco("placement", first, "--breakdown-edges", "1,x", "--out-dir", out)
    assert done.returncode == 2 and "--breakdown-edges" in done.stderr
