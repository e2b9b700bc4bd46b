"""Placement ranks: constructed cases with known answers, ties, chunk boundaries, brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.table import Table
from scipy.spatial.distance import cdist

from galmoco.analysis.placement import (
    _CosineScreen,
    pairwise_distances,
    placement_ranks,
    placement_summary,
    placement_table,
)
from galmoco.errors import GalmocoError

SCIPY = {"l1": "cityblock", "l2": "euclidean", "cosine": "cosine"}


def brute_force(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """The definition on the full float64 matrix: 1 + #closer + #tied others."""
    d = cdist(y.astype(np.float64), x.astype(np.float64), SCIPY[metric])
    true = np.diag(d)[:, None]
    return 1 + (d < true).sum(1) + (d == true).sum(1) - 1


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
@pytest.mark.parametrize("chunk", [1, 7, 50, 300, None])
def test_agrees_with_brute_force(metric, chunk):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x + 1.5 * rng.normal(size=x.shape)).astype(np.float32)  # noisy: ranks spread over 1..300
    expected = brute_force(x, y, metric)
    assert expected.max() > 20 and (expected == 1).any()
    np.testing.assert_array_equal(placement_ranks(x, y, metric, chunk=chunk), expected)


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
@pytest.mark.parametrize("chunk", [2, 3, 5])  # 5 divides N=10, 3 does not
def test_known_ranks_and_ties(metric, chunk):
    x = np.stack([np.arange(10), np.ones(10)], 1).astype(np.float32)  # (j, 1): exact distances
    x[7] = x[6]  # duplicate originals: each copy ties with the other's original -> rank 2
    y = x.copy()  # every other copy equals its own original -> rank 1
    y[0] = x[2]  # 2 from its original; x1, x2, x3 closer and x4 tied (L1, L2) -> rank 5
    ranks = placement_ranks(x, y, metric, chunk=chunk)
    assert ranks[5] == 1 and ranks[6] == 2 and ranks[7] == 2 and ranks[9] == 1
    if metric != "cosine":
        assert ranks[0] == 5
    np.testing.assert_array_equal(ranks, brute_force(x, y, metric))


def test_all_identical_rows_rank_last():
    x = np.ones((6, 4), np.float32)
    for metric in ("l1", "l2", "cosine"):
        np.testing.assert_array_equal(placement_ranks(x, x, metric, chunk=4), np.full(6, 6))


def test_near_ties_are_resolved_exactly():
    # distances that differ far below float32 matmul rounding of large-norm vectors (L2 cancellation)
    rng = np.random.default_rng(0)
    x = (1000 + rng.normal(size=(200, 32))).astype(np.float32)
    y = (x + rng.normal(size=x.shape).astype(np.float32) * 1e-2).astype(np.float32)
    y[10] = x[11] + (x[10] - x[11]) * np.float32(0.5)  # nearly equidistant from 10 and 11
    np.testing.assert_array_equal(placement_ranks(x, y, "l2"), brute_force(x, y, "l2"))


@pytest.mark.parametrize("chunk", [1, 4, 5, 64, None])  # 4 and 5 put tied pairs on both sides of a boundary
def test_l1_integer_ties_across_chunk_boundaries(chunk):
    # small integer latents: every float32 L1 distance is exact, so ties are exact and plentiful
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, size=(64, 6)).astype(np.float32)
    y = x + rng.integers(-1, 2, size=x.shape).astype(np.float32)
    expected = brute_force(x, y, "l1")
    assert (np.diff(np.sort(cdist(y, x, "cityblock"), axis=1), axis=1) == 0).any()  # ties exist
    assert expected.max() > 5
    np.testing.assert_array_equal(placement_ranks(x, y, "l1", chunk=chunk), expected)


def test_l1_near_ties_below_float32_resolution():
    # two originals whose L1 distances to the copy differ by ~1 ulp of the sum: decided in float64
    rng = np.random.default_rng(5)
    x = (100 + rng.normal(size=(40, 64))).astype(np.float32)
    y = x + np.float32(0.5)
    y[3] = x[3]
    y[3, 0] += np.float32(2.0)  # d(y3, x3) = 2
    x[4] = y[3]
    x[4, 1] += np.float32(2.0) + np.float32(2.0**-16)  # d(y3, x4) = 2 + 2^-16: just farther, not tied
    np.testing.assert_array_equal(placement_ranks(x, y, "l1"), brute_force(x, y, "l1"))
    assert placement_ranks(x, y, "l1")[3] == 1


@pytest.mark.parametrize("chunk", [3, 64, None])
def test_cosine_screen_on_anisotropic_latents(chunk):
    # most copies sit next to their original (the screen proves rank 1), some far (full pass), plus
    # exact duplicates and a copy scaled by 2 (exact: cosine 1 to two originals, a tie; 3x would round off
    # the line, and the exact rank is then 1)
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(400, 32)) * np.geomspace(5, 0.05, 32)).astype(np.float32)
    x[20] = x[10]
    x[30] = 2 * x[31]
    noise = np.where(rng.random((400, 1)) < 0.8, 0.01, 2.0)
    y = (x + noise * rng.normal(size=x.shape)).astype(np.float32)
    y[31] = x[31]
    ranks = placement_ranks(x, y, "cosine", chunk=chunk)
    expected = brute_force(x, y, "cosine")
    assert ranks[31] == 2 and (expected == 1).mean() > 0.7 and expected.max() > 10
    np.testing.assert_array_equal(ranks, expected)
    buf = np.empty((400, 400), np.float32)
    unresolved = _CosineScreen(x).unresolved(y, np.arange(400), out=buf, mask=np.empty(buf.shape, bool))
    assert 0 < unresolved.mean() < 0.5  # the screen did settle most rows, and left the hard ones
    assert unresolved[expected > 1].all()  # a row with a closer or tied original is never screened out


def test_pairwise_l1_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(9, 5)).astype(np.float32), rng.normal(size=(13, 5)).astype(np.float32)
    got = pairwise_distances(torch.from_numpy(a), torch.from_numpy(b), "l1")
    np.testing.assert_allclose(got.numpy(), cdist(a, b, "cityblock"), rtol=1e-6)


def test_table_summary_and_exclude():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    emb = Table({"id": [f"g{i}" for i in range(20)], "latent": x, "latent_flip1": x.copy(),
                 "latent_rot90": x[::-1].copy()})
    exclude = np.zeros(20, bool)
    exclude[:2] = True
    ranks = placement_table(emb, "l1", exclude=exclude)
    assert ranks.colnames == ["id", "flip1", "rot90"] and len(ranks) == 18 and ranks["id"][0] == "g2"
    summary = placement_summary(ranks)
    flip1, rot90 = summary[0], summary[1]
    assert flip1["transform"] == "flip1" and flip1["frac_rank1"] == 1.0 and flip1["median"] == 1
    assert flip1["n"] == 18 and flip1["n_excluded"] == 2 and flip1["metric"] == "l1"
    expected = placement_ranks(x[2:], x[::-1][2:], "l1")
    assert rot90["frac_rank1"] == pytest.approx(np.mean(expected == 1))
    assert rot90["p95"] == pytest.approx(np.percentile(expected, 95))
    worst = np.array(ranks["id"])[np.argsort(-expected, kind="stable")[:10]]
    assert rot90["worst10_ids"].split(",") == list(worst)


def test_errors_name_the_problem():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(GalmocoError, match="unknown metric 'manhattan'"):
        placement_ranks(x, x, "manhattan")
    with pytest.raises(GalmocoError, match=r"\(3, 2\) and copies \(2, 2\)"):
        placement_ranks(x, x[:2])
    with pytest.raises(GalmocoError, match="embed --transforms"):
        placement_table(Table({"id": ["a"], "latent": np.zeros((1, 2))}))


def _bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 precision (8 significant bits), as bf16 embedding on GPU does."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("chunk", [3, None])
def test_cosine_exact_ties_of_rounded_latents(chunk):
    rng = np.random.default_rng(4)
    base = _bf16(rng.normal(size=(30, 16)).astype(np.float32))
    scale = np.float32(3.0)  # 3 x a bf16 value is exact in float32: the same direction, another vector
    x = np.concatenate([base, scale * base])
    y = _bf16(x + np.float32(0.02) * rng.normal(size=x.shape).astype(np.float32))
    # copy k's own original and its scaled twin have exactly the same cosine: a tie, counted -> rank 2
    ranks = placement_ranks(x, y, "cosine", chunk)
    np.testing.assert_array_equal(ranks, np.full(60, 2))
    # normalising first rounds the twins apart: the float64 definition alone gets some of these wrong
    unit = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    cos = y.astype(np.float64) @ unit.T
    twin = np.r_[np.arange(30, 60), np.arange(30)]
    assert (cos[np.arange(60), twin] != cos[np.arange(60), np.arange(60)]).any()


def test_cosine_at_least_decides_exactly():
    from fractions import Fraction

    from galmoco.analysis.placement import cosine_at_least

    rng = np.random.default_rng(5)
    y = _bf16(rng.normal(size=(200, 8)).astype(np.float32))
    xt = _bf16(rng.normal(size=(200, 8)).astype(np.float32))
    xc = xt * np.float32(3.0)
    xc[100:] = _bf16(xt[100:] + np.float32(1e-2) * rng.normal(size=(100, 8)).astype(np.float32))
    xc[5] = 0.0  # a zero vector has cosine 0

    def exact(a, b, c):  # s(a, b) >= s(a, c) from squared exact rationals, with signs
        def dot(u, v):
            return sum(Fraction(float(p)) * Fraction(float(q)) for p, q in zip(u, v, strict=True))

        p, q, nb, nc = dot(a, b), dot(a, c), dot(b, b), dot(c, c)
        left = p * abs(p) * nc if nb else 0
        right = q * abs(q) * nb if nc else 0
        return left >= right

    expected = np.array([exact(y[k], xc[k], xt[k]) for k in range(200)])
    np.testing.assert_array_equal(cosine_at_least(y, xc, xt), expected)
    assert expected[np.r_[0:5, 6:100]].all()  # the scaled twins tie (>=)
    assert expected[5] == (y[5].astype(np.float64) @ xt[5] <= 0)  # 0 >= cos(y, xt) decides by sign


def test_owners_rank_copies_of_chosen_originals():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    owners = np.array([3, 0, 11])
    y = x[owners] + np.float32(0.01)
    np.testing.assert_array_equal(placement_ranks(x, y, "l2", owners=owners), [1, 1, 1])
    np.testing.assert_array_equal(placement_ranks(x, x[[4, 5]], "l1", owners=np.array([5, 4]))[0] > 1, True)
    with pytest.raises(GalmocoError, match="owners"):
        placement_ranks(x, y, "l1", owners=np.array([0, 1, 12]))
