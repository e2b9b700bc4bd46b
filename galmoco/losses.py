"""Loss functions: contrastive (InfoNCE, NCE, softmax-CE) and the masked reconstruction error.

Pure functions of tensors. The contrastive ones follow the papers and reference code they name:
MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning", eq. 1),
instance discrimination with NCE (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", eqs. 6-8) and CMC's ``NCECriterion`` / ``NCESoftmaxLoss`` (Tian et al. 2020,
"Contrastive Multiview Coding", github.com/HobbitLong/CMC).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce", "info_nce_logits", "key_similarity", "masked_mse", "masked_error_split", "nce_loss",
           "soft_info_nce", "softmax_ce"]


def key_similarity(q: Tensor, keys: Tensor, similarity: str = "cosine") -> Tensor:
    """How alike each query is to each key, the score InfoNCE divides by its temperature.

    ``"cosine"``: the dot product ``q . k`` (MoCo's; the cosine of L2-normalised vectors, in [-1, 1]).
    ``"l1"``: minus the L1 distance, ``-|q - k|_1 / sqrt(D)``, so that the loss ranks the way placement
    does (``galmoco.analysis.placement``, L1 by default); the ``sqrt(D)`` keeps the scores on about the
    scale of the cosine's (for unit vectors, ``|q - k|_1 / sqrt(D)`` is at most ``|q - k|_2 <= 2``), so
    the same temperatures apply.

    Args:
        q: ``(N, D)`` L2-normalised queries.
        keys: ``(M, D)`` L2-normalised keys.
        similarity: ``"cosine"`` or ``"l1"``.

    Returns:
        ``(N, M)`` scores, larger for more alike.
    """
    keys = keys.to(q.dtype)
    if similarity == "cosine":
        return q @ keys.t()
    if similarity == "l1":
        return torch.cdist(q, keys, p=1) / -math.sqrt(q.shape[1])
    raise ValueError(f"similarity {similarity!r}: expected cosine or l1")


def info_nce_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.07,
                    similarity: str = "cosine") -> Tensor:
    """MoCo's logits: the positive ``s(q, k)`` first, then ``s(q, queue_j)``, all divided by the temperature.

    Args:
        q: ``(N, D)`` L2-normalised queries.
        k: ``(N, D)`` L2-normalised keys (the positives; no gradient is taken through them by MoCo).
        queue: ``(K, D)`` L2-normalised negative keys.
        temperature: the softmax temperature tau (0.07 in MoCo v1, 0.2 in v2).
        similarity: the score ``s`` (:func:`key_similarity`): ``"cosine"`` (MoCo's ``q . k``) or ``"l1"``.

    Returns:
        ``(N, 1 + K)`` logits; the positive is at index 0.
    """
    if similarity == "cosine":
        positive = (q * k).sum(dim=1, keepdim=True)
    else:  # the pairs are the diagonal; N^2 against the queue's N K
        positive = key_similarity(q, k, similarity).diagonal()[:, None]
    negative = key_similarity(q, queue, similarity)
    return torch.cat((positive, negative), dim=1) / temperature


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.07,
             similarity: str = "cosine") -> Tensor:
    """InfoNCE (MoCo eq. 1): ``-log exp(s(q, k)/t) / sum_j exp(s(q, k_j)/t)`` averaged over the batch.

    Args:
        q, k, queue, temperature, similarity: as in :func:`info_nce_logits`.

    Returns:
        Scalar loss (cross-entropy with the positive at index 0).
    """
    logits = info_nce_logits(q, k, queue, temperature, similarity)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def soft_info_nce(positive: Tensor, negative: Tensor, targets: Tensor) -> Tensor:
    """InfoNCE with soft targets over several candidate positives, as Un-Mix's mixed-query loss (Shen et
    al. 2022, "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual Representation Learning", AAAI):
    ``sum_j t_ij * InfoNCE(query i, positive j, negatives of i)``, averaged over the batch.

    Each candidate ``j`` is scored against the query's own negatives only (not against the other
    candidates), so a row with a one-hot target is exactly :func:`info_nce` of that row; for a mixture
    ``lam x_i + (1 - lam) x_j`` this is Un-Mix's ``lam * loss(k_i) + (1 - lam) * loss(k_j)``.

    Args:
        positive: ``(N, M)`` logits (similarity / temperature) of each query with the M candidates.
        negative: ``(N, K)`` logits of each query with its negatives.
        targets: ``(N, M)`` non-negative weights, rows summing to 1 (the mixing weights).

    Returns:
        Scalar loss.
    """
    per_candidate = torch.logaddexp(positive, torch.logsumexp(negative, dim=1, keepdim=True)) - positive
    return (targets.to(per_candidate.dtype) * per_candidate).sum(dim=1).mean()


def masked_mse(recon: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean squared error ``sum(w (r - t)^2) / sum(w)``, the weights broadcast over bands.

    With the per-stamp mean-1 weights of :mod:`galmoco.data.masks` this equals ``mean(w (r - t)^2)``,
    so it is on the scale of a plain MSE whatever the mask; dividing by ``sum(w)`` keeps that true for
    any weights (all-zero weights give 0).

    Args:
        recon: ``(N, B, H, W)`` reconstruction (network space).
        target: ``(N, B, H, W)`` target (network space).
        weights: ``(N, 1, H, W)`` or ``(N, B, H, W)`` non-negative pixel weights.

    Returns:
        Scalar loss.
    """
    w = weights.to(recon.dtype).expand_as(recon)
    return (w * (recon - target).square()).sum() / w.sum().clamp_min(torch.finfo(recon.dtype).tiny)


def masked_error_split(recon: Tensor, target: Tensor, sky: Tensor) -> tuple[Tensor, Tensor]:
    """Per-object mean squared error over source pixels and over sky pixels (all bands), in float64:
    the reconstruction quality the analysis reports (:mod:`galmoco.analysis.reconstruction`).

    Args:
        recon, target: ``(N, B, H, W)`` in the same (normalised) space.
        sky: ``(N, H, W)`` or ``(N, 1, H, W)`` bool, True on sky.

    Returns:
        ``(source_mse, sky_mse)``, each ``(N,)`` float64; NaN for an object with no such pixel.
    """
    err = (recon.double() - target.double()).square().mean(1)  # (N, H, W): band average
    sky_f = sky.reshape(err.shape).to(err.dtype)

    def mean(w: Tensor) -> Tensor:
        count = w.sum((1, 2))
        return torch.where(count > 0, (err * w).sum((1, 2)) / count.clamp_min(1), torch.nan)

    return mean(1.0 - sky_f), mean(sky_f)


def nce_loss(scores: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    """Noise-contrastive estimation loss of instance discrimination (Wu et al. 2018 eq. 6-8; CMC's
    ``NCECriterion``): the positive must look like data, the K negatives like uniform noise ``1/n_data``.

    Args:
        scores: ``(N, 1 + K)`` probabilities ``exp(v . f / tau) / Z`` (already exponentiated and
            normalised by Z), the positive at index 0.
        n_data: the number of training images (the noise distribution is uniform over them).
        eps: guards the logarithms.

    Returns:
        Scalar loss, summed over the positive and the negatives and averaged over the batch.
    """
    n, k1 = scores.shape
    noise = (k1 - 1) / n_data  # K * P_noise
    positive = scores[:, 0]
    negative = scores[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + eps))
    log_d0 = torch.log(noise / (negative + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / n


def softmax_ce(scores: Tensor) -> Tensor:
    """CMC's ``NCESoftmaxLoss``: cross-entropy over ``(N, 1 + K)`` logits with the positive at index 0.

    Args:
        scores: ``(N, 1 + K)`` logits (similarities divided by the temperature, not exponentiated).

    Returns:
        Scalar loss averaged over the batch.
    """
    return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
