"""MoCo's parts: the queue ring buffer, the momentum update, split-BN and the key shuffle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from galmoco.models.moco import (
    KeyQueue,
    LocalBatchShuffle,
    MomentumEncoder,
    SplitBatchNorm,
    convert_split_bn,
    momentum_update,
)


def _keys(start: int, n: int, dim: int = 3) -> torch.Tensor:
    """Rows whose first entry is their running number, so positions in the queue can be read back."""
    k = torch.zeros(n, dim)
    k[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return k


def test_queue_enqueue_advances_pointer_and_wraps_remainder():
    q = KeyQueue(dim=3, size=10)
    assert torch.allclose(q.keys.norm(dim=1), torch.ones(10))  # starts as unit vectors
    q.enqueue(_keys(100, 4))
    assert int(q.ptr) == 4
    assert q.keys[:4, 0].tolist() == [100, 101, 102, 103]
    q.enqueue(_keys(200, 4))
    assert int(q.ptr) == 8
    q.enqueue(_keys(300, 4))  # 2 fit at the end, the remainder wraps to the start
    assert int(q.ptr) == 2
    assert q.keys[:, 0].tolist() == [302, 303, 102, 103, 200, 201, 202, 203, 300, 301]


def test_queue_batch_larger_than_queue_keeps_the_newest():
    q = KeyQueue(dim=3, size=4)
    q.enqueue(_keys(0, 1))
    q.enqueue(_keys(10, 6))  # newest four: 12..15, written from ptr 1 around
    assert sorted(q.keys[:, 0].tolist()) == [12, 13, 14, 15]
    assert int(q.ptr) == (1 + 4) % 4


def test_queue_negatives_is_a_copy_and_state_is_saved():
    q = KeyQueue(dim=3, size=5)
    neg = q.negatives()
    q.enqueue(_keys(7, 2))
    assert not torch.equal(neg[:2], q.keys[:2])
    state = q.state_dict()
    assert set(state) == {"keys", "ptr"}
    q2 = KeyQueue(dim=3, size=5)
    q2.load_state_dict(state)
    assert torch.equal(q2.keys, q.keys) and int(q2.ptr) == 2


def test_momentum_update_numerics_parameters_only_by_default():
    torch.manual_seed(0)
    query = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    key = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    key.train()
    key(torch.randn(8, 3))  # give the key its own running stats
    k_w, q_w = key[0].weight.clone(), query[0].weight.clone()
    k_mean = key[1].running_mean.clone()
    momentum_update(key, query, 0.9)
    assert torch.allclose(key[0].weight, 0.9 * k_w + 0.1 * q_w)
    assert torch.equal(key[1].running_mean, k_mean)  # "own": buffers untouched
    momentum_update(key, query, 0.5, buffers="momentum")
    assert torch.allclose(key[1].running_mean, 0.5 * k_mean + 0.5 * query[1].running_mean)
    assert key[1].num_batches_tracked.dtype == torch.long


def test_momentum_encoder_is_frozen_copy_converging_to_query():
    query = nn.Linear(4, 2)
    enc = MomentumEncoder(query, momentum=0.5)
    assert all(not p.requires_grad for p in enc.parameters())
    with torch.no_grad():
        query.weight.add_(1.0)
    for _ in range(30):
        enc.update(query)
    assert torch.allclose(enc.net.weight, query.weight, atol=1e-6)
    assert torch.allclose(enc(torch.ones(1, 4)), query(torch.ones(1, 4)).detach(), atol=1e-6)


def test_split_bn_train_stats_are_per_split():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * torch.arange(1, 9).view(8, 1, 1, 1)  # splits differ in scale
    split = SplitBatchNorm(3, num_splits=2)
    out = split(x)
    plain = nn.BatchNorm2d(3)
    for s in range(2):  # sample n is in split n % 2
        assert torch.allclose(out[s::2], plain(x[s::2]), atol=1e-5)
    # running statistics are the average of the per-split updates
    expected = 0.9 * 0 + 0.1 * torch.stack([x[s::2].mean((0, 2, 3)) for s in range(2)]).mean(0)
    assert torch.allclose(split.running_mean, expected, atol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        split(x[:7])


def test_convert_split_bn_leaves_eval_outputs_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)))
    net.train()
    for _ in range(3):
        net(torch.randn(8, 2, 6, 6))
    net.eval()
    x = torch.randn(5, 2, 6, 6)
    before = net(x)
    convert_split_bn(net, 4)
    assert isinstance(net[1], SplitBatchNorm) and isinstance(net[2][1], SplitBatchNorm)
    net.eval()
    assert torch.equal(net(x), before)


def test_shuffle_keeps_outputs_in_eval_and_separates_pairs_in_train():
    torch.manual_seed(0)
    net = convert_split_bn(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)), 4)
    shuf = LocalBatchShuffle(torch.Generator().manual_seed(1))
    x = torch.randn(16, 2, 5, 5)
    net.eval()
    xs, idx = shuf.shuffle(x)
    assert torch.allclose(shuf.unshuffle(net(xs), idx), net(x), atol=1e-6)
    net.train()
    xs, idx = shuf.shuffle(x)
    keys = shuf.unshuffle(net(xs), idx)
    queries = net(x)
    # with the shuffle, a sample's key is normalised with other sub-batch statistics than its query
    assert not torch.allclose(keys, queries, atol=1e-3)
    # without it the same split sees the same statistics: identical outputs (the leak the shuffle removes)
    assert torch.allclose(net(x), queries, atol=1e-6)
