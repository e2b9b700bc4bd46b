"""Placement tables: the second observation joined by id, the projection space, the brightness breakdown,
and what placement measures (an exactly rotation-invariant model against a plain one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astropy.table import Table

from galmoco.analysis.placement import placement_ranks
from galmoco.analysis.placement_tables import (
    OBSERVED_AGAIN,
    breakdown_pivot,
    join_by_id,
    placement_breakdown,
    placement_summary,
    placement_table,
)
from galmoco.data.transforms import rotate
from galmoco.embed import embed_store, read_embeddings
from galmoco.errors import GalmocoError
from galmoco.io.store import read_store_contract
from galmoco.io.tables import read_table, write_table


def _embeddings(n: int = 30, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return Table({"id": [f"g{i:02d}" for i in range(n)], "latent": x,
                  "latent_flip1": x + np.float32(1.0) * rng.normal(size=x.shape).astype(np.float32),
                  "projection": -x, "projection_flip1": -x.copy(),
                  "mag_r": rng.uniform(17.5, 23.5, n), "stamp_snr": rng.uniform(2, 80, n)})


def test_second_observation_joined_by_id_reports_missing_ids(tmp_path):
    first = _embeddings()
    rng = np.random.default_rng(1)
    order = rng.permutation(30)[:27]  # three objects never observed again, rows shuffled
    again = Table({"id": np.r_[np.asarray(first["id"])[order], ["stranger"]],
                   "latent": np.r_[np.asarray(first["latent"])[order] + np.float32(0.01),
                                   np.zeros((1, 6), np.float32)]})
    exclude = np.zeros(30, bool)
    exclude[order[0]] = True  # an excluded object's second observation goes with it
    ranks = placement_table(first, "l2", exclude=exclude, observed_again=again)
    col = np.asarray(ranks[OBSERVED_AGAIN])
    missing = sorted(set(first["id"]) - set(again["id"]))
    assert sorted(np.asarray(ranks["id"])[col == 0]) == missing and len(missing) == 3  # 0: not ranked
    assert (col[col > 0] == 1).all() and (col > 0).sum() == 26
    assert ranks.meta["join"].startswith("27 ids matched; 3 only in the embeddings table (e.g. ")
    assert "1 only in the observed-again table (e.g. stranger)" in ranks.meta["join"]
    summary = placement_summary(ranks)
    row = summary[list(summary["transform"]).index(OBSERVED_AGAIN)]
    assert row["n"] == 26 and row["n_missing"] == 3 and row["frac_rank1"] == 1.0
    path = tmp_path / "ranks.fits"  # every format keeps the missing ones
    plain = ranks.copy()
    plain.meta.clear()
    write_table(plain, path)
    reread = placement_summary(read_table(path))
    assert reread[list(reread["transform"]).index(OBSERVED_AGAIN)]["n_missing"] == 3
    # the ranks are those of the matched rows computed directly
    kept = np.asarray(first["latent"])[~exclude]
    rows = np.flatnonzero(col > 0)
    second = {i: v for i, v in zip(again["id"], again["latent"], strict=True)}
    direct = placement_ranks(kept, np.stack([second[i] for i in np.asarray(ranks["id"])[rows]]), "l2",
                             owners=rows)
    np.testing.assert_array_equal(col[rows], direct)


def test_duplicated_ids_are_refused_with_examples():
    first = _embeddings()
    again = Table({"id": ["g01", "g02", "g01"], "latent": np.zeros((3, 6), np.float32)})
    twice = r": 1 ids occur more than once \(e\.g\. g0[14]\)"
    with pytest.raises(GalmocoError, match="the observed-again table" + twice):
        placement_table(first, observed_again=again)
    first["id"][3] = "g04"
    with pytest.raises(GalmocoError, match="the embeddings table" + twice):
        join_by_id(first["id"], again["id"][:2], "the embeddings table")


def test_identity_encoder_finds_a_noise_free_galaxy_observed_again():
    from galmoco.sim import ObservingConfig, PopulationConfig, SimSpec, simulate_object

    galaxies = PopulationConfig(class_fractions={"spiral": 0.5, "elliptical": 0.5}, neighbour_fraction=0.0,
                                star_neighbour_fraction=0.0)
    spec = SimSpec(seed=7, size=48, population=galaxies,
                   observing=ObservingConfig(psf_scatter=0.0))  # the same seeing in both observations
    objects = [(k, 30.0, -30.0 + 0.001 * k) for k in range(12)]
    pixels = {o: [simulate_object(*obj, spec, noise=False, observation=o) for obj in objects] for o in (1, 2)}
    tables = {o: Table({"id": [p.truth["id"] for p in pixels[o]],
                        "latent": np.stack([p.image.ravel() for p in pixels[o]])}) for o in (1, 2)}
    assert not np.array_equal(tables[1]["latent"], tables[2]["latent"])  # a sub-pixel offset apart
    ranks = placement_table(tables[1], "l2", observed_again=tables[2][::-1])  # row order does not matter
    np.testing.assert_array_equal(ranks[OBSERVED_AGAIN], np.ones(12))


def test_projection_space():
    emb = _embeddings()
    ranks = placement_table(emb, "l1", space="projection")
    assert ranks.meta["space"] == "projection" and (ranks["flip1"] == 1).all()  # copies equal in projection
    assert not (placement_table(emb, "l1")["flip1"] == 1).all()
    del emb["projection_flip1"]
    with pytest.raises(GalmocoError, match=r"no projection_<transform> columns; re-run `galmoco embed "
                                           r"--transforms --projection`"):
        placement_table(emb, space="projection")


def test_breakdown_equals_a_direct_computation_from_the_ranks_table():
    emb = _embeddings(200, seed=3)
    emb["latent_rot30"] = np.asarray(emb["latent"]) + np.float32(0.6) * np.random.default_rng(4).normal(
        size=(200, 6)).astype(np.float32)
    emb["mag_r"][5] = np.nan  # no magnitude: in no magnitude bin
    ranks = placement_table(emb, "l1")
    breakdown = placement_breakdown(ranks)
    assert set(breakdown["column"]) == {"mag_r", "stamp_snr"}
    mag, snr = np.asarray(ranks["mag_r"]), np.asarray(ranks["stamp_snr"])
    bins = {"mag_r": [("<19", mag < 19), ("19-20", (mag >= 19) & (mag < 20)),
                      ("20-21", (mag >= 20) & (mag < 21)), ("21-22", (mag >= 21) & (mag < 22)),
                      (">22", mag >= 22)],
            "stamp_snr": [("<5", snr < 5), ("5-10", (snr >= 5) & (snr < 10)),
                          ("10-20", (snr >= 10) & (snr < 20)), ("20-50", (snr >= 20) & (snr < 50)),
                          (">50", snr >= 50)]}
    for t in ("flip1", "rot30"):
        r = np.asarray(ranks[t])
        for column, cells in bins.items():
            for label, inside in cells:
                row = breakdown[(breakdown["transform"] == t) & (breakdown["column"] == column)
                                & (breakdown["bin"] == label)]
                assert row["n"][0] == inside.sum() > 0
                assert row["frac_rank1"][0] == pytest.approx(np.mean(r[inside] == 1))
    assert breakdown[breakdown["column"] == "mag_r"]["n"].sum() == 2 * 199
    pivot = breakdown_pivot(breakdown, "mag_r")
    assert list(pivot["transform"]) == ["flip1", "rot30"] and pivot.colnames[1].startswith("mag_r <19 (n=")
    with pytest.raises(GalmocoError, match="no column 'mag_i'"):
        placement_breakdown(ranks, "mag_i")


class _PooledPixels(torch.nn.Module):
    """A pixel encoder (2x2-pooled fluxes), made exactly invariant to turns by a grid of ``angles`` when
    given: the mean of the features of the stamp turned by every grid angle (a turn by a grid angle only
    permutes the terms)."""

    def __init__(self, angles: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.angles = angles

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images  # embedding normalises once and encodes the normalised stamps

    def encode_normalized(self, images: torch.Tensor) -> torch.Tensor:
        def features(x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x, 2).flatten(1)

        if not self.angles:
            return features(images)
        sky = torch.Generator().manual_seed(0)
        return torch.stack([features(rotate(images, a, generator=sky)) for a in self.angles]).mean(0)


@pytest.mark.slow
def test_a_rotation_invariant_model_finds_turned_copies_far_more_often(tmp_path, store_path):
    grid = tuple(float(a) for a in range(0, 360, 45))
    fractions = {}
    for name, model in (("plain", _PooledPixels()), ("invariant", _PooledPixels(grid))):
        model.contract = read_store_contract(store_path)  # what embedding checks a store against
        out = embed_store(model, store_path, tmp_path / f"{name}.parquet", transforms=True,
                          angles=(45.0,), random_rotation=True, device="cpu")
        table = read_embeddings(out)
        ranks = placement_table(table, "l2", exclude=np.asarray(table["class"]) == "empty")
        fractions[name] = {t: float(np.mean(ranks[t] == 1)) for t in ("rot45", "rotrand")}
    # a turn on the grid: the invariant model's features are the same set of terms
    assert fractions["invariant"]["rot45"] == 1.0 and fractions["plain"]["rot45"] < 0.7, fractions
    assert fractions["invariant"]["rotrand"] > fractions["plain"]["rotrand"] + 0.3, fractions
