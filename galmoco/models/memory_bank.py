"""Memory banks for instance discrimination (InsDis) and contrastive multiview coding (CMC).

InsDis (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination")
keeps one L2-normalised vector per training image; each image's embedding is scored against its own
bank entry (the positive) and ``K`` entries drawn uniformly (the negatives), and after the step the
bank entries of the batch move towards the new embeddings (momentum ``m``) and are renormalised.
CMC (Tian et al. 2019) keeps one bank per view and scores view ``i``'s embedding against view
``j``'s bank. This follows CMC's ``NCEAverage`` (github.com/HobbitLong/CMC, ``models/NCEAverage.py``):

- softmax mode: scores are ``<v, w> / T``, used with a cross-entropy whose target is column 0;
- NCE mode: scores are ``exp(<v, w> / T) / Z``, with the normalisation constant ``Z`` estimated
  once, on the first batch, as ``mean(exp(<v, w> / T)) * n_data`` (then fixed and checkpointed).

Across ranks, the update gathers the batch's indices and vectors from every rank, so every rank's
bank stays identical (as PyContrast's ``_update_memory`` with ``all_x``/``all_y``). Negatives are
drawn with ``torch.randint`` (uniform, which is what CMC's AliasMethod over uniform weights draws).
"""

from __future__ import annotations

import itertools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from galmoco.distributed import concat_all_gather, is_distributed

__all__ = ["MemoryBank", "MultiViewNCE", "first_occurrence", "nce_scores"]


def first_occurrence(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``.

    Args:
        index: ``(n,)`` integer tensor.

    Returns:
        ``(n_distinct,)`` long positions into ``index``, in order of the distinct values.
    """
    _, inverse = torch.unique(index, return_inverse=True)
    n_unique = int(inverse.max().item()) + 1 if inverse.numel() else 0
    position = torch.arange(index.numel(), device=index.device)
    first = torch.full((n_unique,), index.numel(), dtype=torch.long, device=index.device)
    return first.scatter_reduce_(0, inverse, position, reduce="amin")


def nce_scores(similarity: torch.Tensor, temperature: float, z: float | None) -> torch.Tensor:
    """Turn cosine similarities into CMC's scores.

    Args:
        similarity: ``(B, K+1)`` dot products of unit vectors, positive first.
        temperature: ``T``.
        z: the NCE normalisation constant; ``None`` for softmax mode.

    Returns:
        ``similarity / T`` (softmax mode: logits) or ``exp(similarity / T) / z`` (NCE mode:
        unnormalised probabilities ``P(i | v)``, to be compared with the noise ``1 / n_data``).
    """
    if z is None:
        return similarity / temperature
    return torch.exp(similarity / temperature) / z


class MemoryBank(nn.Module):
    """One L2-normalised vector per training image, updated with momentum.

    Args:
        n_data: number of training images (rows; indexed by the store's catalogue row).
        dim: vector length.
        momentum: ``m`` in ``w <- normalize(m * w + (1 - m) * v)`` (0.5 in InsDis and CMC).
        seed: seed of the random initial vectors, so that every rank starts with the same bank.
    """

    memory: torch.Tensor

    def __init__(self, n_data: int, dim: int, momentum: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("memory", F.normalize(torch.randn(n_data, dim, generator=gen), dim=1))
        self.momentum = momentum

    @property
    def n_data(self) -> int:
        """Number of entries."""
        return self.memory.shape[0]

    def draw(self, index: torch.Tensor, k: int) -> torch.Tensor:
        """Indices to score: the batch's own entries in column 0, then ``k`` uniform draws.

        Args:
            index: ``(B,)`` long, each image's row in the bank.
            k: number of negatives per image.

        Returns:
            ``(B, k+1)`` long on the bank's device.
        """
        idx = torch.randint(self.n_data, (index.shape[0], k + 1), device=self.memory.device)
        idx[:, 0] = index.to(self.memory.device)
        return idx

    def similarity(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Dot products of each row of ``x`` with the bank entries ``idx`` of the same row.

        Args:
            x: ``(B, dim)`` L2-normalised embeddings (carry gradient).
            idx: ``(B, K+1)`` bank rows.

        Returns:
            ``(B, K+1)``; the bank is constant (no gradient flows into it).
        """
        # float32 even under autocast: exp(s / 0.07) of bf16 similarities would be too coarse
        with torch.autocast(device_type=x.device.type, enabled=False):
            weights = self.memory[idx].detach().float()  # (B, K+1, dim)
            return torch.bmm(weights, x.float().unsqueeze(2)).squeeze(2)

    @torch.no_grad()
    def update(self, x: torch.Tensor, index: torch.Tensor) -> None:
        """Move the batch's entries towards ``x`` and renormalise; across ranks, with every rank's batch.

        An image that occurs twice in the gathered batch (a distributed sampler pads the last
        batches by repeating images) is updated once, from its first occurrence, so the result is
        deterministic and the same on every rank.

        Args:
            x: ``(B, dim)`` this rank's embeddings (detached here).
            index: ``(B,)`` their bank rows.
        """
        x = concat_all_gather(x.detach().float())
        index = concat_all_gather(index.to(x.device))
        keep = first_occurrence(index)
        x, index = x[keep].to(self.memory.device), index[keep].to(self.memory.device)
        mixed = self.memory[index] * self.momentum + x * (1.0 - self.momentum)
        self.memory[index] = F.normalize(mixed, dim=1)


class MultiViewNCE(nn.Module):
    """Memory-bank scores for InsDis (one view) or CMC (each ordered pair of views), as CMC's NCEAverage.

    With one view the image's embedding is scored against the bank of that same view (InsDis).
    With ``V >= 2`` views, view ``i`` is scored against bank ``j`` for every ``i != j`` (CMC's "full
    graph"; for two views exactly CMC's ``out_l``/``out_ab``), all pairs sharing one draw of negatives.

    Args:
        n_data: number of training images.
        dim: embedding length of each view.
        n_views: number of views (1 for InsDis).
        k: negatives per image (``--nce-k``; 4096 in InsDis and CMC, at most ``n_data - 1`` useful).
        temperature: ``T`` (0.07 in both papers).
        momentum: bank momentum (``--nce-m``, 0.5).
        use_softmax: softmax-CE scores (``--softmax``) rather than NCE (``--nce``).
        seed: seed of the initial banks.
    """

    z: torch.Tensor

    def __init__(self, n_data: int, dim: int, n_views: int = 1, k: int = 4096, temperature: float = 0.07,
                 momentum: float = 0.5, use_softmax: bool = False, seed: int = 0) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k (negatives) must be >= 1, got {k}")
        self.banks = nn.ModuleList(MemoryBank(n_data, dim, momentum, seed + v) for v in range(n_views))
        self.pairs: list[tuple[int, int]] = (
            [(0, 0)] if n_views == 1 else list(itertools.permutations(range(n_views), 2)))
        self.k, self.temperature, self.use_softmax = k, temperature, use_softmax
        # Z per scored pair; negative means "not yet estimated" (as CMC's params[2:4] = -1)
        self.register_buffer("z", torch.full((len(self.pairs),), -1.0))

    @property
    def n_data(self) -> int:
        """Number of training images (``n_data`` of the NCE loss)."""
        return self.banks[0].n_data

    def _z(self, pair: int, similarity: torch.Tensor) -> float | None:
        if self.use_softmax:
            return None
        if self.z[pair] < 0:  # estimate once; averaged over ranks so every rank uses the same Z
            mean = torch.exp(similarity.detach().float() / self.temperature).mean()
            if is_distributed():
                dist.all_reduce(mean)
                mean /= dist.get_world_size()
            self.z[pair] = mean * self.n_data
        return float(self.z[pair])

    def forward(self, views: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
        """Score the batch, then update the banks with it (as CMC: scores use the pre-update bank).

        Args:
            views: ``V`` tensors ``(B, dim)``, each L2-normalised.
            index: ``(B,)`` long, the images' catalogue rows.

        Returns:
            One ``(B, K+1)`` score tensor per pair in :attr:`pairs` (positive in column 0).
        """
        if len(views) != len(self.banks):
            raise ValueError(f"expected {len(self.banks)} views, got {len(views)}")
        idx = self.banks[0].draw(index, self.k)
        scores = []
        for p, (i, j) in enumerate(self.pairs):
            similarity = self.banks[j].similarity(views[i], idx)
            scores.append(nce_scores(similarity, self.temperature, self._z(p, similarity)))
        for bank, v in zip(self.banks, views, strict=True):
            bank.update(v, index)
        return scores
