"""Survey-level behaviour: determinism across workers, packing, the manifest and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from galmoco.sim import simulate_survey

REPO = Path(__file__).resolve().parents[2]


def _images(job: Path) -> dict[str, bytes]:
    """Every FITS file's data bytes (headers hold nothing random), keyed by relative path."""
    return {str(p.relative_to(job)): p.read_bytes() for p in sorted(job.rglob("*.fits"))}


@pytest.mark.slow
def test_same_seed_same_bytes_with_one_and_two_workers(tmp_path):
    a = simulate_survey(24, tmp_path / "a", seed=11, workers=1, chunk=5)
    b = simulate_survey(24, tmp_path / "b", seed=11, workers=2, chunk=3)
    assert a.name == b.name
    ia, ib = _images(a), _images(b)
    assert len(ia) == 96 and ia == ib
    c = simulate_survey(24, tmp_path / "c", seed=12, workers=1)
    assert _images(c) != ia


@pytest.mark.slow
def test_packs_without_skipping_untrimmed_objects(small_job, tmp_path):
    from galmoco.io.pack import pack_cutouts
    from galmoco.io.store import read_catalog

    truth = Table.read(small_job.parent / "truth.fits")
    result = pack_cutouts(small_job, tmp_path / "sim.h5", bands="griz", size=64, pad=False, workers=1)
    skipped = {s.id for s in result.skipped}
    assert skipped == set(truth["id"][truth["trimmed"]])
    assert result.n_packed == int((~truth["trimmed"]).sum())
    assert set(read_catalog(result.path)["id"]) == set(truth["id"][~truth["trimmed"]])
    padded = pack_cutouts(small_job, tmp_path / "pad.h5", bands="griz", size=64, pad=True, workers=1)
    assert padded.n_packed == len(truth) and not padded.skipped


def test_manifest_positions_and_unmatched(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("ra,dec\n21.58813,3.48611\n30.0,-30.0\n200.0,40.0\n")
    job = simulate_survey(None, tmp_path / "out", manifest=manifest, seed=0)
    truth = Table.read(job.parent / "truth.ecsv")
    assert list(truth["id"]) == ["DESJ012621.1512+032909.9960", "DESJ020000.0000-300000.0000"]
    import json

    summary = json.loads((job / "summary.json").read_text())
    assert summary["unmatched_positions"]["coord"] == {"RA": [200.0], "DEC": [40.0]}
    assert (job / truth["tilename"][0] / truth["id"][0] / f"{truth['id'][0]}_z.fits").exists()


@pytest.mark.slow
def test_cli_simulate_prints_paths(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "galmoco", "simulate", "-n", "3", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    job = Path(proc.stdout.split("job folder: ")[1].split()[0])
    assert job.is_dir() and (tmp_path / "truth.fits").exists() and "time:" in proc.stdout
    again = subprocess.run(
        [sys.executable, "-m", "galmoco", "simulate", "-n", "3", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "galmoco", "simulate", "-n", "3", "-o", str(tmp_path), "--bands", "gru"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 1 and "bands='gru'" in bad.stderr
    assert np.isfinite(Table.read(tmp_path / "truth.fits")["mag_i"]).sum() >= 2


def test_second_observation_same_object_new_conditions():
    from galmoco.sim import SimSpec, simulate_object

    from .conftest import only

    spec = SimSpec(seed=5, population=only("spiral", neighbour_fraction=0, star_neighbour_fraction=0))
    for k in range(4):
        first = simulate_object(k, 30.0, -30.0 + 0.001 * k, spec)
        again = simulate_object(k, 30.0, -30.0 + 0.001 * k, spec, observation=2)
        assert again.truth["id"] == first.truth["id"] and again.truth["observation"] == 2
        for key in ("class", "hlr_arcsec", "sersic_n", "ellipticity", "pa_deg", "mag_r", "n_clumps"):
            assert again.truth[key] == first.truth[key], key  # the same galaxy
        assert again.truth["psf_fwhm_r"] != first.truth["psf_fwhm_r"]  # seen again under other seeing,
        assert again.truth["sky_sigma_r"] != first.truth["sky_sigma_r"]  # sky
        assert 0 < abs(again.truth["shift_x_pix"]) <= 0.5 and 0 < abs(again.truth["shift_y_pix"]) <= 0.5
        assert not np.array_equal(again.image, first.image)
        # its flux is the same galaxy's, up to the two noise realisations
        noise = np.hypot(first.truth["sky_sigma_r"], again.truth["sky_sigma_r"]) * 64
        assert abs(again.image[1].sum() - first.image[1].sum()) < 6 * noise
        assert simulate_object(k, 30.0, -30.0 + 0.001 * k, spec, observation=2).truth == again.truth


@pytest.mark.slow
def test_cli_observations_writes_a_second_job_with_the_same_ids(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "galmoco", "simulate", "-n", "4", "-o", str(tmp_path), "--observations", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    job = Path(proc.stdout.split("job folder: ")[1].split()[0])
    again = Path(proc.stdout.split("observation 2: ")[1].split()[0])
    assert again.parent == tmp_path / "observation2" and again.name != job.name
    first, second = Table.read(tmp_path / "truth.fits"), Table.read(tmp_path / "observation2" / "truth.fits")
    assert list(first["id"]) == list(second["id"]) and list(second["observation"]) == [2] * 4
    assert not np.array_equal(first["psf_fwhm_i"], second["psf_fwhm_i"])
    names = {p.relative_to(job) for p in job.rglob("*.fits")}
    assert names == {p.relative_to(again) for p in again.rglob("*.fits")} and len(names) == 16
    # the first observation is the single-observation survey, byte for byte
    alone = simulate_survey(4, tmp_path / "alone")
    assert alone.name == job.name and _images(alone) == _images(job)
