"""The decoder: the conv encoder mirrored, from a latent vector back to a normalised stamp."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvDecoder"]


class ConvDecoder(nn.Module):
    """A linear layer to a ``widths[-1] x s x s`` map (``s = ceil(size / 2**len(widths))``), then
    stride-2 4x4 transposed-conv stages (convT-BN-ReLU) back up through the widths in reverse, the last
    one straight to ``out_channels`` with no BN or activation (the target is the normalised image,
    which can be negative). It mirrors :class:`~galmoco.models.encoders.ConvEncoder` stage for stage.
    A side that ``2**len(widths)`` does not divide (DESaccess's default 1 arcmin cutouts are 228
    pixels) is drawn on the next multiple up and centre-cropped.

    Args:
        out_channels: number of bands ``B``.
        latent_dim: size of the latent vector.
        widths: the encoder's stage widths (the decoder runs them in reverse).
        image_size: stamp side ``H == W`` in pixels.
    """

    def __init__(self, out_channels: int, latent_dim: int, widths: Sequence[int], image_size: int) -> None:
        super().__init__()
        factor = 2 ** len(widths)
        self.start = -(-image_size // factor)
        self.image_size = image_size
        self.crop = (self.start * factor - image_size) // 2
        rev = list(widths)[::-1]
        self.fc = nn.Linear(latent_dim, rev[0] * self.start * self.start)
        stages: list[nn.Module] = []
        for c_in, c_out in zip(rev[:-1], rev[1:], strict=True):
            stages += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        # the last stage mirrors the encoder's first conv: straight to the bands, full resolution
        stages.append(nn.ConvTranspose2d(rev[-1], out_channels, 4, stride=2, padding=1))
        self.up = nn.Sequential(*stages)
        self._width = rev[0]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(N, latent_dim)`` -> ``(N, B, H, W)`` in the normalised input space."""
        x = self.fc(latent).view(-1, self._width, self.start, self.start)
        drawn = self.up(torch.relu(x))
        if drawn.shape[-1] == self.image_size:
            return drawn
        keep = slice(self.crop, self.crop + self.image_size)
        return drawn[..., keep, keep]
