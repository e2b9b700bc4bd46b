"""Encoders: a small convolutional encoder for CPU training and torchvision ResNets adapted to stamps.

Both map a normalised ``(N, B, H, W)`` batch to an ``(N, latent_dim)`` latent vector (no activation).
The ResNets follow the usual CIFAR-style adaptation for small images (He et al. 2016, sec. 4.2, as
used by SimCLR/MoCo on 32x32 inputs): a 3x3 stride-1 stem with ``B`` input channels and no max-pool,
so a 64x64 stamp keeps its spatial detail through the first stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from galmoco.errors import GalmocoError

__all__ = ["ARCHS", "ConvEncoder", "build_encoder", "resnet_encoder"]

#: encoder architectures accepted by :func:`build_encoder`
ARCHS: tuple[str, ...] = ("conv", "resnet18", "resnet50")



def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvEncoder(nn.Module):
    """Stride-2 3x3 conv stages (conv-BN-ReLU), an adaptive average pool to ``pool x pool``, a linear layer.

    Each stage halves the stamp; a 64x64 stamp with four stages ends at 4x4, so with ``pool=4`` the
    pool is the identity and the linear layer sees where the light is; with ``pool=1`` only what the
    channels encode reaches the latent, which makes invariance to flips and rotations easier to learn.

    Args:
        in_channels: number of bands ``B``.
        latent_dim: size of the latent vector.
        widths: output channels of each stage.
        pool: side of the map the last stage is average-pooled to before the linear layer: 4 keeps
            where the light is; 1 (global average pooling) leaves only what the channels encode.
    """

    def __init__(self, in_channels: int, latent_dim: int, widths: Sequence[int], pool: int = 4) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.features = nn.Sequential(*[_conv_bn_relu(a, b, 2) for a, b in pairs])
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(widths[-1] * pool * pool, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B, H, W)`` -> ``(N, latent_dim)``."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def resnet_encoder(arch: str, in_channels: int, latent_dim: int) -> nn.Module:
    """A torchvision ResNet (random init) with a 3x3 stride-1 stem for ``in_channels`` bands, no max-pool.

    Args:
        arch: ``"resnet18"`` or ``"resnet50"``.
        in_channels: number of bands.
        latent_dim: output size of the final linear layer (replaces the 1000-class classifier).

    Returns:
        The network, ``(N, B, H, W)`` -> ``(N, latent_dim)``.
    """
    net = getattr(torchvision.models, arch)(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, latent_dim)
    return net


def build_encoder(arch: str, in_channels: int, latent_dim: int, widths: Sequence[int],
                  pool: int = 4) -> nn.Module:
    """The encoder named by ``arch`` (see :data:`ARCHS`); ``widths`` and ``pool`` are used by ``"conv"`` only.

    Raises:
        GalmocoError: for an unknown ``arch``.
    """
    if arch == "conv":
        return ConvEncoder(in_channels, latent_dim, widths, pool)
    if arch in ARCHS:
        return resnet_encoder(arch, in_channels, latent_dim)
    raise GalmocoError(f"model.arch: unknown encoder {arch!r}; expected one of {', '.join(ARCHS)}")
