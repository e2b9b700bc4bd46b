"""galmoco.models.memory_bank: draws, scores, Z, momentum update; identical banks across 2 gloo ranks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from galmoco.losses import nce_loss, softmax_ce
from galmoco.models.memory_bank import MemoryBank, MultiViewNCE, first_occurrence, nce_scores
from tests.process_group import launch_local


def test_first_occurrence():
    assert first_occurrence(torch.tensor([7, 3, 7, 1, 3])).tolist() == [3, 1, 0]  # values 1, 3, 7
    assert first_occurrence(torch.tensor([], dtype=torch.long)).tolist() == []


def test_initial_bank_is_unit_vectors_and_seeded():
    a, b = MemoryBank(20, 8, seed=1), MemoryBank(20, 8, seed=1)
    assert torch.equal(a.memory, b.memory)
    torch.testing.assert_close(a.memory.norm(dim=1), torch.ones(20))
    assert not torch.equal(a.memory, MemoryBank(20, 8, seed=2).memory)


def test_draw_puts_the_positive_first_and_stays_in_range():
    bank = MemoryBank(50, 4)
    idx = bank.draw(torch.tensor([4, 9, 49]), k=100)
    assert idx.shape == (3, 101)
    assert idx[:, 0].tolist() == [4, 9, 49]
    assert int(idx.min()) >= 0 and int(idx.max()) <= 49
    assert len(idx[:, 1:].unique()) > 40  # uniform draws cover the bank


def test_momentum_update_on_a_constructed_case():
    bank = MemoryBank(3, 2, momentum=0.5)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    bank.update(torch.tensor([[0.0, 1.0], [0.6, 0.8]]), torch.tensor([0, 2]))
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[s, s], [0.0, 1.0], [0.8 / math.hypot(0.8, 0.4), 0.4 / math.hypot(0.8, 0.4)]])
    torch.testing.assert_close(bank.memory, expected)


def test_nce_scores_and_z_estimated_once():
    nce = MultiViewNCE(n_data=4, dim=2, k=3, temperature=0.5, use_softmax=False)
    bank = nce.banks[0]
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    x = torch.tensor([[1.0, 0.0]])
    torch.manual_seed(0)
    (scores,) = nce([x], torch.tensor([0]))
    torch.manual_seed(0)
    idx = bank.draw(torch.tensor([0]), 3)  # the same draw forward made
    sim = torch.tensor([[1.0, 0.0, -1.0, 0.0]])[:, idx[0]]
    z = float(torch.exp(sim / 0.5).mean() * 4)
    assert float(nce.z[0]) == pytest.approx(z)
    torch.testing.assert_close(scores, torch.exp(sim / 0.5) / z)
    nce([x], torch.tensor([1]))
    assert float(nce.z[0]) == pytest.approx(z)  # fixed after the first batch


def test_nce_loss_of_bank_scores_on_a_constructed_case():
    """Two images, K = 1, T = 1: every number by hand (Wu et al. 2018 eq. 6-8, noise P_n = 1/2)."""
    nce = MultiViewNCE(n_data=2, dim=2, k=1, temperature=1.0, use_softmax=False)
    nce.banks[0].memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.manual_seed(3)
    (scores,) = nce([torch.tensor([[1.0, 0.0]])], torch.tensor([0]))
    torch.manual_seed(3)
    negative = int(nce.banks[0].draw(torch.tensor([0]), 1)[0, 1])
    s_neg = 1.0 if negative == 0 else 0.0
    z = (math.e + math.exp(s_neg)) / 2 * 2
    p_pos, p_neg = math.e / z, math.exp(s_neg) / z
    expected = -(math.log(p_pos / (p_pos + 0.5)) + math.log(0.5 / (p_neg + 0.5)))
    assert float(nce_loss(scores, nce.n_data)) == pytest.approx(expected, rel=1e-5)


def test_softmax_scores_are_logits():
    sim = torch.tensor([[0.5, -0.25]])
    torch.testing.assert_close(nce_scores(sim, 0.1, None), torch.tensor([[5.0, -2.5]]))
    nce = MultiViewNCE(n_data=10, dim=3, k=4, temperature=0.5, use_softmax=True)
    x = F.normalize(torch.randn(2, 3), dim=1)
    torch.manual_seed(1)
    (scores,) = nce([x], torch.tensor([1, 2]))
    assert float(nce.z[0]) == -1.0  # never estimated in softmax mode
    # the loss is the cross-entropy with the positive (column 0) as the target
    expected = -torch.log_softmax(scores, dim=1)[:, 0].mean()
    torch.testing.assert_close(softmax_ce(scores), expected)


def test_cmc_scores_each_view_against_the_other_views_bank():
    nce = MultiViewNCE(n_data=6, dim=2, n_views=2, k=2, temperature=1.0, use_softmax=True)
    assert nce.pairs == [(0, 1), (1, 0)]
    nce.banks[0].memory.copy_(F.normalize(torch.tensor([[1.0, 0.0]]).repeat(6, 1), dim=1))
    nce.banks[1].memory.copy_(F.normalize(torch.tensor([[0.0, 1.0]]).repeat(6, 1), dim=1))
    v0, v1 = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    s01, s10 = nce([v0, v1], torch.tensor([3]))
    torch.testing.assert_close(s01, torch.ones(1, 3))   # view 0 . bank 1 (all (0, 1))
    torch.testing.assert_close(s10, torch.zeros(1, 3))  # view 1 . bank 0 (all (1, 0))
    # then each bank moved towards its own view
    torch.testing.assert_close(nce.banks[0].memory[3], F.normalize(torch.tensor([0.5, 0.5]), dim=0))


def test_gradient_reaches_the_embedding_not_the_bank():
    nce = MultiViewNCE(n_data=8, dim=4, k=5, use_softmax=True)
    x = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    (scores,) = nce([x], torch.tensor([0, 1, 2]))
    scores.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not nce.banks[0].memory.requires_grad


# ----------------------------------------------------------------------------- 2 real processes
_INDEX = ([0, 1, 2], [2, 5, 6])  # image 2 on both ranks (a padded distributed sampler does this)


def _batch(rank: int) -> torch.Tensor:
    return F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(10 + rank)), dim=1)


def _worker(rank: int, out: str) -> None:
    nce = MultiViewNCE(n_data=10, dim=4, n_views=2, k=4, temperature=0.1, momentum=0.5, use_softmax=False)
    torch.manual_seed(rank)  # different negatives on each rank, as in a real run
    nce([_batch(rank), -_batch(rank)], torch.tensor(_INDEX[rank]))
    torch.save(nce.state_dict(), Path(out) / f"rank{rank}.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_bank_update_gathers_every_rank_and_banks_stay_identical(tmp_path):
    launch_local(_worker, 2, str(tmp_path))
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert (states[0]["z"] > 0).all()
    # the expected bank 0, computed in one process from both ranks' batches; image 2 from rank 0 (first)
    expected = MemoryBank(10, 4, momentum=0.5, seed=0).memory.clone()
    x = torch.cat([_batch(0), _batch(1)])
    for row, i in [(0, 0), (1, 1), (2, 2), (4, 5), (5, 6)]:
        expected[i] = F.normalize(0.5 * expected[i] + 0.5 * x[row], dim=0)
    torch.testing.assert_close(states[0]["banks.0.memory"], expected)
