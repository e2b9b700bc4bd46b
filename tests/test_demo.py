"""The main job end to end on tiny data: ``galmoco demo``, its headline, and the notebooks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from astropy.table import Table
from nbclient import NotebookClient

from galmoco.demo import DEMO_RUNS, STUDY_RANK, breakdown_table, demo_runs, headline_table, symmetry_table
from galmoco.embed import read_embeddings
from galmoco.fetch.manifest import read_manifest
from galmoco.fetch.standin import DesAccessServer, running

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    cmd = [sys.executable, "-m", "galmoco", "demo", "--out", str(out), "--n", "160", "--epochs", "1",
           "--device", "cpu", "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_demo_writes_every_stage_and_a_true_headline(demo_run):
    out, proc = demo_run
    assert (out / "report.html").is_file() and (out / "survey" / "truth.fits").is_file()
    assert proc.stdout.count("packed 160 objects, skipped 0") == 2  # both observations; trimmed ones padded
    for run in DEMO_RUNS:
        assert (out / run / "checkpoints" / "last.pt").is_file()
        assert len(Table.read(out / run / "metrics.csv", format="ascii.csv")) == 1
    placement, recon = headline_table(out)
    truth = Table.read(out / "survey" / "truth.fits")
    n_used = int(np.sum(np.asarray(truth["class"]).astype(str) != "empty"))
    assert list(placement["transform"]) == ["flip1", "flip2", "flip3", "rot90", "rot270", "transpose",
                                            "antitranspose", "rot30", "rot45", "rotrand", "observed_again"]
    assert set(placement["n"]) == {n_used}
    # the printed tables are the ones in the files, number for number
    d4 = ", ".join(f"{run} {min(placement[f'rank1_{run}'][:7]):.3f}" for run in DEMO_RUNS)
    assert f"(lowest of the 7): {d4}" in proc.stdout
    for row in placement[7:]:
        printed = re.search(rf"^\s*{row['transform']}\s+(\d+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s*$",
                            proc.stdout, re.M)
        assert printed, proc.stdout
        assert int(printed[1]) == n_used
        assert float(printed[2]) == pytest.approx(row["rank1_ae"], abs=1e-3)
        assert float(printed[3]) == pytest.approx(row["median_ae"], abs=0.5)
        assert float(printed[4]) == pytest.approx(row["rank1_moco-ae"], abs=1e-3)
    breakdown = breakdown_table(out)
    assert [(str(r), str(t)) for r, t in breakdown["run", "transform"]] == [
        (run, t) for run in DEMO_RUNS for t in ("rotrand", "observed_again")]
    for row in breakdown:
        cells = " ".join(f"{v:.3f}" if np.isfinite(v) else "nan" for v in list(row)[2:])
        pattern = rf"^\s*{row['run']}\s+{row['transform']}\s+" + cells.replace(" ", r"\s+")
        assert re.search(pattern, proc.stdout, re.M), (cells, proc.stdout)
    assert list(recon["run"]) == list(DEMO_RUNS) and np.all(np.asarray(recon["galaxy_mse"]) > 0)
    assert f"Report: {out / 'report.html'}" in proc.stdout


@pytest.mark.slow
def test_demo_breakdown_agrees_with_a_direct_computation_from_the_ranks_table(demo_run):
    out, _ = demo_run
    for run in DEMO_RUNS:
        ranks = Table.read(out / run / "placement_ranks.fits")
        breakdown = Table.read(out / run / "placement_breakdown.csv", format="ascii.csv")
        mag = np.asarray(ranks["mag_r"], float)
        for t in ("rot45", "rotrand", "observed_again"):
            r = np.asarray(ranks[t])  # 0: not observed again
            bins = ((-np.inf, 19, "<19"), (19, 20, "19-20"), (20, 21, "20-21"), (21, 22, "21-22"),
                    (22, np.inf, ">22"))
            for lo, hi, label in bins:
                inside = (mag >= lo) & (mag < hi) & (r > 0)
                row = breakdown[(breakdown["transform"] == t) & (breakdown["column"] == "mag_r")
                                & (breakdown["bin"] == label)]
                assert row["n"][0] == inside.sum()
                if inside.any():
                    assert row["frac_rank1"][0] == pytest.approx(np.mean(r[inside] == 1))


@pytest.mark.slow
def test_demo_rerun_reuses_finished_stages(demo_run):
    out, _ = demo_run
    stamp = (out / "moco-ae" / "checkpoints" / "last.pt").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "galmoco", "demo", "--out", str(out), "--n", "160",
                           "--epochs", "1", "--device", "cpu", "--workers", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "survey: reusing" in proc.stdout and "dataset: reusing" in proc.stdout
    assert "moco-ae: reusing" in proc.stdout
    assert (out / "moco-ae" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_demo_in_the_study_setting_learns_the_flips_beside_the_default_runs(demo_run):
    """``--frame none`` trains its own two runs in the same folder (survey and datasets reused, the
    default runs untouched) and prints the study's reading of the flips, as its files hold it."""
    out, _ = demo_run
    stamp = (out / "moco-ae" / "checkpoints" / "last.pt").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "galmoco", "demo", "--out", str(out), "--n", "160",
                           "--epochs", "1", "--device", "cpu", "--workers", "1", "--frame", "none"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "survey: reusing" in proc.stdout and "dataset: reusing" in proc.stdout
    assert (out / "moco-ae" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    runs = demo_runs("none")
    assert runs == ("ae-none", "moco-ae-none") and (out / "report-none.html").is_file()
    for run in runs:
        config = (out / run / "config.yaml").read_text()
        assert "frame: none" in config and "draw_frame: null" in config and "photometry: null" in config
    symmetry = symmetry_table(out, runs)
    placement, _ = headline_table(out, runs)
    for row in symmetry:  # pooled over the seven: the mean of the seven rank-1 fractions of the summary
        assert row["rank1"] == pytest.approx(np.mean(placement[f"rank1_{row['run']}"][:7]), abs=1e-9)
        ranks = Table.read(out / row["run"] / "placement_ranks.fits")
        seven = np.stack([np.asarray(ranks[t]) for t in placement["transform"][:7]])
        assert row["within_rank"] == pytest.approx(np.mean(seven <= STUDY_RANK))
        bright = np.asarray(ranks["mag_r"]) < 20
        assert row["rank1_bright"] == pytest.approx(np.mean(seven[:, bright] == 1))
        printed = f"{row['run']} {row['rank1']:.3f} / {row['rank1_bright']:.3f}, {row['within_rank']:.3f}"
        assert printed in proc.stdout
    assert "Pipeline check" not in proc.stdout and "model.frame: none" in proc.stdout


def _execute(name: str, cwd: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), f"{name}: outputs in git"
    old = dict(os.environ)
    os.environ.update(env)
    try:  # the kernel inherits this process's environment
        client = NotebookClient(book, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return book


@pytest.mark.slow
def test_explore_notebook_runs(demo_run, tmp_path):
    out, _ = demo_run
    book = _execute("explore_latent_space.ipynb", tmp_path,
                    {"GALMOCO_RUN": str(out / "moco-ae"), "GALMOCO_DATASET": str(out / "dataset.h5"),
                     "MPLBACKEND": "Agg"})
    text = "\n".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
    assert "latent dimensions" in text
    assert (tmp_path / "placement_histograms_notebook.png").is_file()


@pytest.mark.slow
def test_own_data_notebook_fetches_packs_and_embeds(demo_run, tmp_path):
    out, _ = demo_run
    manifest = tmp_path / "positions.csv"
    Table.read(ROOT / "data_manifests" / "simulated_survey.csv")[:6].write(manifest, format="ascii.csv")
    with running(DesAccessServer({"astro": "s3cret"})) as server:
        book = _execute("your_own_des_data.ipynb", tmp_path, {
            "GALMOCO_MANIFEST": str(manifest), "GALMOCO_CHECKPOINT": str(out / "moco-ae"),
            "GALMOCO_WORK": str(tmp_path / "work"), "DESACCESS_USER": "astro", "DESACCESS_PASSWORD": "s3cret",
            "GALMOCO_DESACCESS_API": f"{server.url}/desaccess/api", "GALMOCO_DESACCESS_FILES": server.files,
            "GALMOCO_ALLOW_INSECURE": "1"})
    emb = read_embeddings(tmp_path / "work" / "embeddings.parquet")
    assert sorted(emb["id"]) == sorted(read_manifest(manifest)["id"])
    text = "\n".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
    assert "6 packed; 0 skipped" in text and "s3cret" not in text
