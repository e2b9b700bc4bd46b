"""A change of seeing on stamps: wider or sharper, by a Gaussian factor in Fourier space.

A second observation of a galaxy is seen through another PSF, which may be wider or sharper than the
first. Widening is a convolution; sharpening is its inverse, a deconvolution that amplifies the high
spatial frequencies (and the noise in them), so its gain is capped. With a PSF close to Gaussian,
changing its variance by ``v`` pixels^2 multiplies the image's Fourier transform by
``exp(-2 pi^2 v |k|^2)`` (``k`` in cycles per pixel): ``v > 0`` widens, ``v < 0`` sharpens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["change_psf"]


def change_psf(images: Tensor, variance: Tensor, max_gain: float = 3.0) -> Tensor:
    """Change each stamp's and band's PSF variance by ``variance`` (px^2): widen (> 0) or sharpen (< 0).

    The filter is ``min(exp(-2 pi^2 variance |k|^2), max_gain)``: flux (``k = 0``) is kept exactly, a
    widening is an exact Gaussian convolution (periodic at the stamp's edges, where DES stamps are sky),
    and a sharpening is an inverse Gaussian whose gain stops at ``max_gain``.

    Args:
        images: ``(N, B, H, W)`` raw flux.
        variance: ``(N, B)`` change of the PSF's Gaussian variance in pixels^2 (0: unchanged).
        max_gain: largest factor by which a sharpening may amplify a spatial frequency (>= 1).

    Returns:
        ``(N, B, H, W)``, a new tensor.
    """
    h, w = images.shape[-2:]
    ky = torch.fft.fftfreq(h, device=images.device, dtype=torch.float32)
    kx = torch.fft.rfftfreq(w, device=images.device, dtype=torch.float32)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    exponent = (-2 * math.pi**2) * variance.to(torch.float32)[:, :, None, None] * k2
    gain = torch.exp(exponent).clamp_(max=max_gain)
    spectrum = torch.fft.rfft2(images.to(torch.float32)) * gain
    return torch.fft.irfft2(spectrum, s=(h, w)).to(images.dtype)
