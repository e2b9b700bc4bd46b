"""Contrastive and reconstruction losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from galmoco.losses import (
    info_nce,
    info_nce_logits,
    key_similarity,
    masked_error_split,
    masked_mse,
    nce_loss,
    soft_info_nce,
    softmax_ce,
)


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # logits / 0.5: row 0 [q.k, q.queue0, q.queue1] = [0.6, 0, -1]; row 1 [1, 1, 0]
    logits = info_nce_logits(q, k, queue, temperature=0.5)
    assert torch.allclose(logits, torch.tensor([[1.2, 0.0, -2.0], [2.0, 2.0, 0.0]]))
    row0 = -1.2 + math.log(math.exp(1.2) + 1.0 + math.exp(-2.0))
    row1 = -2.0 + math.log(2 * math.exp(2.0) + 1.0)
    assert info_nce(q, k, queue, temperature=0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_info_nce_gradient_and_default_temperature():
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    k = F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(16, 8), dim=1)
    loss = info_nce(q, k, queue)
    logits = torch.cat(((q * k).sum(1, keepdim=True), q @ queue.t()), 1) / 0.07
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).item())
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_l1_similarity_by_hand_and_where_it_disagrees_with_the_cosine():
    # D = 4: scores are -|q - k|_1 / 2
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[0.6, 0.8, 0.0, 0.0]])  # cosine 0.6; L1 distance 1.2
    spread = torch.tensor([[0.7, 0.4, 0.4, 0.4359]])  # cosine 0.7 (nearer); L1 distance 1.5359 (farther)
    assert key_similarity(q, spread, "cosine").item() == pytest.approx(0.7)
    scores = key_similarity(q, torch.cat((k, spread)), "l1")
    assert scores.tolist()[0] == pytest.approx([-0.6, -0.76795], rel=1e-4)
    # the positive is first by L1 and second by cosine: the l1 loss is the smaller
    assert info_nce(q, k, spread, 0.2, "l1") < info_nce(q, k, spread, 0.2, "cosine")
    logits = info_nce_logits(q, k, spread, temperature=0.5, similarity="l1")
    assert torch.allclose(logits, torch.tensor([[-1.2, -1.5359]]), atol=1e-4)
    with pytest.raises(ValueError, match="similarity 'l2'"):
        key_similarity(q, k, "l2")


def test_l1_info_nce_gradient_is_finite_and_lowers_the_loss():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    k = F.normalize(torch.randn(8, 16), dim=1)
    queue = F.normalize(torch.randn(64, 16), dim=1)
    loss = info_nce(q, k, queue, 0.2, "l1")
    loss.backward()
    assert torch.isfinite(q.grad).all()
    stepped = F.normalize(q.detach() - 0.05 * q.grad, dim=1)
    assert info_nce(stepped, k, queue, 0.2, "l1") < loss


def test_masked_mse_on_constructed_tensors():
    recon = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 4.0]]]])
    ones = torch.ones(1, 1, 2, 2)
    assert masked_mse(recon, target, ones).item() == pytest.approx((1 + 4 + 9 + 16) / 8)
    # only the top-left pixel counts: errors 1 and 9 in the two bands
    top_left = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]])  # mean-1 weights of that mask
    assert masked_mse(recon, target, top_left).item() == pytest.approx((1 + 9) / 2)
    plain_mean = (top_left * (recon - target) ** 2).mean().item()
    assert masked_mse(recon, target, top_left).item() == pytest.approx(plain_mean)
    per_band = torch.zeros(1, 2, 2, 2)
    per_band[0, 1, 1, 1] = 1.0
    assert masked_mse(recon, target, per_band).item() == pytest.approx(16.0)
    assert masked_mse(recon, target, torch.zeros(1, 1, 2, 2)).item() == 0.0


def test_masked_error_split_per_object():
    recon = torch.zeros(2, 2, 2, 2)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2).repeat(2, 2, 1, 1)
    target[1] *= 2  # the second object's errors are 4x the first's
    sky = torch.tensor([[True, True], [False, False]]).expand(2, 2, 2)
    source, sky_error = masked_error_split(recon, target, sky)
    assert source.dtype == sky_error.dtype == torch.float64
    assert source.tolist() == pytest.approx([(9 + 16) / 2, 4 * (9 + 16) / 2])
    assert sky_error.tolist() == pytest.approx([(1 + 4) / 2, 4 * (1 + 4) / 2])
    all_sky = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    source, sky_error = masked_error_split(recon, target, all_sky)
    assert torch.isnan(source).all() and sky_error.tolist() == pytest.approx([7.5, 30.0])


def test_nce_loss_by_hand():
    scores = torch.tensor([[0.5, 0.1, 0.2]])  # K = 2 negatives, n_data = 4: K * P_noise = 0.5
    expected = -(math.log(0.5 / 1.0) + math.log(0.5 / 0.6) + math.log(0.5 / 0.7))
    assert nce_loss(scores, n_data=4, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    batch = torch.tensor([[0.5, 0.1, 0.2], [0.9, 0.05, 0.05]])
    second = -(math.log(0.9 / 1.4) + 2 * math.log(0.5 / 0.55))
    assert nce_loss(batch, n_data=4, eps=0.0).item() == pytest.approx((expected + second) / 2, rel=1e-6)


def test_softmax_ce_by_hand():
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    expected = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(1.0))
    assert softmax_ce(scores).item() == pytest.approx(expected, rel=1e-6)


def test_soft_info_nce_with_one_hot_targets_is_info_nce():
    q, k = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    queue = F.normalize(torch.randn(20, 8), dim=1)
    loss = soft_info_nce(q @ k.t() / 0.2, q @ queue.t() / 0.2, torch.eye(6))
    assert loss.item() == pytest.approx(info_nce(q, k, queue, 0.2).item(), rel=1e-6)


def test_soft_info_nce_is_the_weighted_sum_of_each_candidate_cross_entropy():
    positive = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    negative = torch.tensor([[0.3, -0.2], [1.5, 0.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.25, 0.75]])
    # by hand: row i, candidate j: -p_ij + log(exp(p_ij) + sum_k exp(n_ik))
    def ce(p, negs):
        return -p + math.log(math.exp(p) + sum(math.exp(v) for v in negs))
    row0 = 0.7 * ce(2.0, [0.3, -0.2]) + 0.3 * ce(-1.0, [0.3, -0.2])
    row1 = 0.25 * ce(1.0, [1.5, 0.0]) + 0.75 * ce(3.0, [1.5, 0.0])
    assert soft_info_nce(positive, negative, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
