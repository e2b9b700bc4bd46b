"""Projection heads: linear (MoCo v1, He et al. 2020), a 2-layer MLP (MoCo v2, Chen et al. 2020), or none
(``identity``: InfoNCE acts on the L2-normalised latent itself, the space ``embed`` and placement read)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galmoco.errors import GalmocoError

__all__ = ["HEADS", "ProjectionHead"]

#: head kinds accepted by :class:`ProjectionHead`
HEADS: tuple[str, ...] = ("linear", "mlp", "identity")


class ProjectionHead(nn.Module):
    """Map a latent vector to the L2-normalised space where the contrastive loss is computed.

    The latent itself (before the head) is what ``embed`` and placement use; the head is a
    training-time device, as in MoCo v2 / SimCLR.

    Args:
        latent_dim: input size.
        proj_dim: output size.
        kind: ``"linear"``, ``"mlp"`` (Linear-ReLU-Linear with a hidden layer of ``latent_dim``,
            as MoCo v2's head keeps the backbone's width) or ``"identity"`` (no parameters; needs
            ``proj_dim == latent_dim``).
    """

    def __init__(self, latent_dim: int, proj_dim: int, kind: str = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(latent_dim, proj_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(latent_dim, latent_dim), nn.ReLU(inplace=True), nn.Linear(latent_dim, proj_dim)
            )
        elif kind == "identity":
            if proj_dim != latent_dim:
                raise GalmocoError(f"model.head identity needs model.proj_dim == model.latent_dim, "
                                   f"got {proj_dim} and {latent_dim}")
            self.net = nn.Identity()
        else:
            raise GalmocoError(f"model.head: unknown head {kind!r}; expected one of {', '.join(HEADS)}")

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(N, latent_dim)`` -> ``(N, proj_dim)``, each row of unit L2 norm."""
        return F.normalize(self.net(latent), dim=1)
