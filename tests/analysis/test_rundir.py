"""The analysis files kept in a run directory: defaults, and caches keyed on their inputs."""

import shutil

import numpy as np
import pytest
from astropy.table import Table

from galmoco.analysis.reconstruction import reconstruction_errors
from galmoco.analysis.rundir import (
    PHYSICAL_COLUMNS,
    default_probe_columns,
    ensure_embeddings,
    ensure_placement,
    ensure_probes,
    ensure_reconstruction,
)
from galmoco.cachekey import key_path
from galmoco.config import load_config, save_config
from galmoco.data.masks import MaskConfig
from galmoco.embed import embed_store
from galmoco.io.tables import read_table
from tests.analysis.conftest import write_run_dir


def test_default_probes_are_the_physical_truth_columns():
    table = Table({"id": ["a", "b"], "ra": [1.0, 2.0], "trimmed": [False, False], "index": [0, 1],
                   "hlr_arcsec": [0.5, 0.9], "class": ["spiral", "elliptical"], "latent": np.ones((2, 3))})
    assert default_probe_columns(table) == [c for c in PHYSICAL_COLUMNS if c in ("class", "hlr_arcsec")]


def test_default_probes_without_truth_skip_constant_and_bookkeeping_columns():
    table = Table({"id": ["a", "b"], "dec": [1.0, 2.0], "trimmed": [False, False], "flux": [3.0, 4.0],
                   "latent": np.ones((2, 3))})
    assert default_probe_columns(table) == ["flux"]


def _resume_with_another_model(run, tmp_path) -> None:
    """Replace the run's checkpoint by another model's, as ``train --resume`` rewrites ``last.pt``."""
    other = write_run_dir(tmp_path / "other", "ae", seed=7)
    shutil.copyfile(other / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")


def test_embeddings_are_recomputed_after_the_checkpoint_changes(tmp_path, store_path, make_run):
    run = make_run("run", "ae", 0)
    path = ensure_embeddings(run, store_path, "cpu")
    first, stamp = read_table(path)["latent"], path.stat().st_mtime_ns
    assert ensure_embeddings(run, store_path, "cpu") == path and path.stat().st_mtime_ns == stamp  # reused
    _resume_with_another_model(run, tmp_path)
    again = read_table(ensure_embeddings(run, store_path, "cpu"))["latent"]
    fresh = read_table(embed_store(run, store_path, tmp_path / "fresh.parquet", device="cpu"))["latent"]
    assert not np.allclose(again, first) and np.allclose(again, fresh)


def test_embeddings_written_by_embed_are_reused_until_their_origin_is_unknown(store_path, make_run):
    run = make_run("run", "ae", 0)
    path = embed_store(run, store_path, run / "embeddings.fits", transforms=True, device="cpu")
    stamp = path.stat().st_mtime_ns
    assert ensure_embeddings(run, store_path, "cpu") == path and path.stat().st_mtime_ns == stamp
    key_path(path).unlink()  # a table of unknown origin is recomputed when it can be
    assert ensure_embeddings(run, store_path, "cpu") == run / "embeddings.parquet"
    assert ensure_embeddings(run, None, "cpu") == run / "embeddings.parquet"


def test_placement_is_recomputed_for_other_options(store_path, make_run):
    run = make_run("run", "ae", 0)
    _, summary = ensure_placement(run, "l2", store_path, "cpu")
    assert (summary["n_excluded"] == 0).all() and (summary["n"] == 48).all()
    _, summary = ensure_placement(run, "l2", store_path, "cpu", exclude_column="class", exclude_value="empty")
    assert (summary["n_excluded"] == 16).all() and (summary["n"] == 32).all()
    ranks, summary = ensure_placement(run, "l2", store_path, "cpu", transforms=["rot90"])
    assert list(summary["transform"]) == ["rot90"] and ranks.colnames == ["id", "rot90", "stamp_snr"]


def test_probes_are_recomputed_for_other_columns(store_path, make_run):
    run = make_run("run", "ae", 0)
    assert set(ensure_probes(run, ["class"], store_path, "cpu")["column"]) == {"class"}
    assert set(ensure_probes(run, ["hlr_arcsec"], store_path, "cpu")["column"]) == {"hlr_arcsec"}
    assert set(ensure_probes(run, None, store_path, "cpu")["column"]) == {"class", "hlr_arcsec"}


def test_reconstruction_uses_and_is_keyed_on_the_runs_mask_settings(tmp_path, store_path, make_run):
    run = make_run("run", "ae", 0)
    default = ensure_reconstruction(run, store_path, MaskConfig(), "cpu")
    config = load_config(run / "config.yaml")
    config.mask = MaskConfig(thresh=5.0, dilate=0)
    save_config(config, run / "config.yaml")
    table = ensure_reconstruction(run, store_path, device="cpu")
    expected = reconstruction_errors(run, store_path, config.mask, device="cpu")
    assert table["source_mse"][0] == pytest.approx(expected["source_mse"])
    assert table["source_mse"][0] != pytest.approx(default["source_mse"][0])
    _resume_with_another_model(run, tmp_path)
    after = ensure_reconstruction(run, store_path, device="cpu")
    assert after["source_mse"][0] == pytest.approx(
        reconstruction_errors(run, store_path, config.mask, device="cpu")["source_mse"])
    assert after["source_mse"][0] != pytest.approx(table["source_mse"][0])
