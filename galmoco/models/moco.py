"""The parts of momentum contrast (He et al. 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning", arXiv:1911.05722), each separate so objectives and engines can swap them:

- :class:`KeyQueue`: the ring buffer of negative keys and its pointer;
- :func:`momentum_update` and :class:`MomentumEncoder`: the key encoder, an exponential moving
  average of the query encoder's parameters;
- :class:`SplitBatchNorm` / :func:`convert_split_bn` and :class:`LocalBatchShuffle`: keeping batch
  norm from leaking the positive pair on one device. A distributed engine replaces
  :class:`LocalBatchShuffle` by a cross-rank shuffle (all-gather, permute, scatter) with the same
  ``shuffle``/``unshuffle`` methods.

BN buffers of the key encoder (policy ``"own"``, the official MoCo behaviour): the momentum update
covers parameters only; the key encoder's running mean/var are whatever its own train-mode forwards
accumulate. They never affect training (the key encoder always runs in train mode, on batch
statistics) and the key encoder is never used for inference. Policy ``"momentum"`` averages the
floating-point buffers with the same momentum as the parameters instead.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_BUFFER_POLICIES",
    "BatchShuffle",
    "KeyQueue",
    "LocalBatchShuffle",
    "MomentumEncoder",
    "SplitBatchNorm",
    "convert_split_bn",
    "momentum_update",
]

#: what the momentum update does with the key encoder's BN buffers
BN_BUFFER_POLICIES: tuple[str, ...] = ("own", "momentum")


class KeyQueue(nn.Module):
    """A first-in-first-out queue of ``size`` L2-normalised keys of dimension ``dim``, as a ring buffer.

    Any batch size works: a batch that runs past the end wraps around to the start (the remainder),
    and a batch larger than the queue keeps its last ``size`` keys. Both the keys and the pointer are
    buffers, so they are saved in the state dict (and a checkpoint).

    Args:
        dim: key dimension.
        size: number of keys held (``K`` in the paper).
        generator: seeds the random unit vectors the queue starts with (MoCo starts from noise too).
    """

    def __init__(self, dim: int, size: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of keys the queue holds."""
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(n, dim)`` over the oldest entries and advance the pointer by ``n`` (mod size)."""
        keys = keys.detach()
        if keys.shape[0] > self.size:
            keys = keys[-self.size:]
        n = keys.shape[0]
        start = int(self.ptr)
        first = min(n, self.size - start)
        self.keys[start:start + first] = keys[:first]
        self.keys[: n - first] = keys[first:]
        self.ptr.fill_((start + n) % self.size)

    def negatives(self) -> torch.Tensor:
        """The current keys ``(size, dim)`` as a detached copy (safe to enqueue into afterwards)."""
        return self.keys.detach().clone()


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, momentum: float, buffers: str = "own") -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` for every parameter (MoCo eq. 2).

    Args:
        key: the key network (updated in place).
        query: the query network, same architecture.
        momentum: ``m`` in [0, 1); MoCo uses 0.999.
        buffers: ``"own"`` leaves the key's buffers alone; ``"momentum"`` averages its floating-point
            buffers (BN running statistics) the same way. Integer buffers (BN's batch counter) are
            never touched.
    """
    for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)
    if buffers == "momentum":
        for bk, bq in zip(key.buffers(), query.buffers(), strict=True):
            if bk.is_floating_point():
                bk.mul_(momentum).add_(bq, alpha=1.0 - momentum)
    elif buffers != "own":
        raise ValueError(f"unknown BN buffer policy {buffers!r}; expected one of {BN_BUFFER_POLICIES}")


class MomentumEncoder(nn.Module):
    """A frozen copy of a query network, kept as its momentum average.

    Args:
        query: the network to copy (e.g. encoder followed by projection head).
        momentum: ``m``.
        buffers: BN buffer policy, see :func:`momentum_update`.
    """

    def __init__(self, query: nn.Module, momentum: float = 0.999, buffers: str = "own") -> None:
        super().__init__()
        self.net = copy.deepcopy(query)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.buffers_policy = buffers

    def update(self, query: nn.Module) -> None:
        """One momentum step towards ``query``."""
        momentum_update(self.net, query, self.momentum, self.buffers_policy)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Keys for ``x``, without gradients."""
        return self.net(x)


class SplitBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are computed separately over ``num_splits`` sub-batches.

    This simulates the per-GPU BN of multi-GPU MoCo on one device (the official single-GPU CIFAR
    demo does the same): with the key batch shuffled, the query and key of a pair are normalised with
    statistics of different sub-batches, so the network cannot find its positive through BN. Sample
    ``n`` belongs to split ``n % num_splits``; the batch size must be a multiple of ``num_splits``.
    In eval mode it is an ordinary BatchNorm2d. Running statistics are the average over splits.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(N, C, H, W)``; in train mode per split."""
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(f"SplitBatchNorm: batch of {n} is not a multiple of {s} splits")
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        out = F.batch_norm(
            x.reshape(n // s, c * s, h, w), mean, var, self.weight.repeat(s), self.bias.repeat(s),
            True, self.momentum if self.momentum is not None else 0.1, self.eps,
        ).view(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked.add_(1)
        return out


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by a :class:`SplitBatchNorm` with the same
    parameters and buffers; returns ``module``. ``num_splits == 1`` leaves it unchanged."""
    if num_splits == 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            split = SplitBatchNorm(child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            convert_split_bn(child, num_splits)
    return module


class BatchShuffle(Protocol):
    """Shuffles a key batch across BN groups before the key encoder and restores the order after."""

    def shuffle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the shuffled batch and whatever :meth:`unshuffle` needs (an index tensor)."""

    def unshuffle(self, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Put the rows of the key encoder's output back in the original order."""


class LocalBatchShuffle:
    """Shuffle-BN on one device: a random permutation of the batch (MoCo sec. 3.3, with
    :class:`SplitBatchNorm` defining the BN groups).

    Args:
        generator: drives the permutations (part of the run's RNG state, so resumes repeat them).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def shuffle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[perm]`` and the inverse permutation."""
        device = self.generator.device if self.generator is not None else x.device
        perm = torch.randperm(x.shape[0], generator=self.generator, device=device).to(x.device)
        return x[perm], torch.argsort(perm)

    def unshuffle(self, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``y[inverse]``: rows back in the order of the unshuffled batch."""
        return y[index]
