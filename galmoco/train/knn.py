"""The kNN monitor: weighted cosine k-nearest-neighbour classification of held-out latents.

Each query is classified by its ``k`` most cosine-similar bank latents, each voting for its class with
weight ``exp(similarity / tau)`` (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", sec. 3.4; the monitor of the MoCo and InstDisc code).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from galmoco.models.galaxy import GalaxyModel

__all__ = ["compute_latents", "encode_labels", "knn_accuracy", "knn_predict"]


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, n_classes: int,
                k: int = 20, tau: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Predicted class of each query.

    Args:
        bank: ``(M, D)`` reference latents.
        bank_labels: ``(M,)`` integer classes in ``[0, n_classes)``.
        queries: ``(Q, D)`` latents to classify.
        n_classes: number of classes.
        k: neighbours (capped at ``M``).
        tau: vote temperature.
        chunk: queries per similarity block (bounds memory to ``chunk x M``).

    Returns:
        ``(Q,)`` long tensor of predicted classes.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], n_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / tau).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                 query_labels: torch.Tensor, k: int = 20, tau: float = 0.1) -> float:
    """Fraction of queries whose kNN prediction (see :func:`knn_predict`) equals their label."""
    n_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(bank, bank_labels, queries, n_classes, k, tau)
    return float((pred == query_labels).float().mean())


def encode_labels(values: np.ndarray) -> np.ndarray:
    """Class labels of any dtype (strings, ints) as integer codes 0..C-1 (sorted unique order)."""
    return np.unique(np.asarray(values), return_inverse=True)[1].astype(np.int64)


@torch.no_grad()
def compute_latents(model: GalaxyModel, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Latents ``(N, latent_dim)`` of every batch of ``loader`` (dicts with ``"image"``), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    out = [model.encode(batch["image"].to(device, non_blocking=True)) for batch in loader]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.latent_dim, device=device)
