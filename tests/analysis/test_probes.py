"""Probes recover a column the latents encode and get chance level on one they do not."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from galmoco.analysis.probes import run_probes
from galmoco.errors import GalmocoError


def _tables(n: int = 300):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(n, 6)).astype(np.float32)
    ids = [f"g{i}" for i in range(n)]
    emb = Table({"id": ids, "latent": latent})
    truth = Table({"id": ids[::-1], "size": (2 * latent[:, 0] - latent[:, 1])[::-1],
                   "kind": np.where(latent[:, 2] > 0, "disk", "bulge")[::-1], "noise": rng.normal(size=n)})
    return emb, truth


def test_probes_join_on_id_and_score():
    emb, truth = _tables()
    result = run_probes(emb, truth, ["size", "kind", "noise"], test_fraction=0.3, seed=1)
    score = {(r["column"], r["probe"]): r["score"] for r in result}
    assert score[("size", "linear")] > 0.99 and score[("size", "knn")] > 0.7
    assert score[("kind", "linear")] > 0.9 and score[("kind", "knn")] > 0.8
    assert score[("noise", "linear")] < 0.1
    row = result[(result["column"] == "kind") & (result["probe"] == "linear")][0]
    assert row["metric"] == "accuracy" and row["n_test"] == 90 and row["n_train"] == 210
    assert 0.3 < row["baseline"] < 0.7


def test_probe_errors():
    emb, truth = _tables(20)
    with pytest.raises(GalmocoError, match="columns not found: mass"):
        run_probes(emb, truth, ["mass"])
    with pytest.raises(GalmocoError, match="test-fraction"):
        run_probes(emb, truth, ["size"], test_fraction=1.5)
