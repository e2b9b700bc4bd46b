"""Contrastive multiview coding (Tian, Krishnan & Isola 2019, "Contrastive Multiview Coding",
arXiv:1906.05849) with the views being groups of bands.

CMC splits an image into views (for natural images L and ab colour channels) and trains one encoder
per view so that the views of one image agree against other images' views; the representation is
the concatenation of the views' features. For galaxies a view is a group of bands (``--views gr,iz``):
the network must find what the blue and the red light of a galaxy have in common (its shape, its
size, where it is) rather than its colour, which differs between the views by construction. There
is no decoder. The contrast itself (memory banks, NCE) is :class:`galmoco.models.memory_bank.MultiViewNCE`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from galmoco.errors import GalmocoError

__all__ = ["CMCEncoder", "parse_views"]


def parse_views(spec: str, bands: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Band groups from a ``--views`` string, as channel indices into the store's bands.

    Args:
        spec: comma-separated groups of one-letter bands, e.g. ``"gr,iz"``.
        bands: the store's bands in channel order, e.g. ``("g", "r", "i", "z")``.

    Returns:
        One tuple of channel indices per view, e.g. ``((0, 1), (2, 3))``.

    Raises:
        GalmocoError: fewer than two views, an empty view, an unknown band, or a band in two views.
    """
    groups = [g.strip() for g in spec.split(",")]
    if len(groups) < 2 or any(not g for g in groups):
        raise GalmocoError(f"--views {spec!r}: give at least two non-empty band groups, e.g. 'gr,iz'")
    seen: set[str] = set()
    views = []
    for group in groups:
        for band in group:
            if band not in bands:
                raise GalmocoError(
                    f"--views {spec!r}: band {band!r} is not in the store (bands {''.join(bands)})")
            if band in seen:
                raise GalmocoError(f"--views {spec!r}: band {band!r} is in more than one view")
            seen.add(band)
        views.append(tuple(bands.index(b) for b in group))
    return tuple(views)


class CMCEncoder(nn.Module):
    """One encoder per view; the embedding is the concatenation of the views' latents.

    Args:
        views: channel indices of each view (see :func:`parse_views`).
        encoder_factory: builds one view's encoder from its number of input channels, e.g.
            ``lambda c: build_encoder("conv", c, latent_dim // n_views, widths)``.
    """

    def __init__(self, views: Sequence[Sequence[int]], encoder_factory: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.views = tuple(tuple(v) for v in views)
        for i, view in enumerate(self.views):
            # a buffer so that indexing follows the module to its device without a host copy each step
            self.register_buffer(f"channels_{i}", torch.tensor(view, dtype=torch.long), persistent=False)
        self.encoders = nn.ModuleList(encoder_factory(len(v)) for v in self.views)

    def view_latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each view's latent.

        Args:
            x: ``(N, B, H, W)`` normalised images with all the store's bands.

        Returns:
            One ``(N, d_v)`` tensor per view.
        """
        return [enc(x.index_select(1, getattr(self, f"channels_{i}")))
                for i, enc in enumerate(self.encoders)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B, H, W)`` -> ``(N, sum of d_v)``: the concatenated views' latents (the embedding)."""
        return torch.cat(self.view_latents(x), dim=1)
