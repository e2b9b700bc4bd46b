"""A change of seeing on stamps: a Gaussian blur (wider), or a Gaussian factor in Fourier space (wider or
sharper).

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

from galmoco.errors import GalmocoError

__all__ = ["change_psf", "gaussian_blur"]


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


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur, its own sigma per stamp and band (sigma 0: unchanged), reflect edges.

    Each 1-d pass is a product with a banded ``(W, W)`` matrix per stamp and band (the kernel's taps,
    folded at the edges as ``F.pad(mode="reflect")`` mirrors), so the blur is two batched matmuls:
    measured 1.5x faster on CPU than a depthwise convolution with one group per stamp and band.

    Args:
        images: ``(N, B, W, W)`` raw flux, square.
        sigma: ``(N, B)`` Gaussian sigma in pixels.
        radius: the kernel's half-width in pixels (fixed, so that shapes never depend on the draws).

    Returns:
        ``(N, B, W, W)``, a new tensor.
    """
    n, nb, h, w = images.shape
    if h != w:
        raise GalmocoError(f"augmentations need square stamps, got {h}x{w}")
    kernel = _discrete_gaussian(sigma.reshape(n * nb), radius).to(images.dtype)
    band = torch.einsum("mk,kij->mij", kernel, _reflected_taps(radius, w, images.device))
    x = images.reshape(n * nb, h, w)
    return (band @ x @ band.transpose(1, 2)).reshape(n, nb, h, w)


_taps_cache: dict[tuple[int, int, str], Tensor] = {}


def _reflected_taps(radius: int, size: int, device: torch.device) -> Tensor:
    """``(2 radius + 1, size, size)`` 0/1: entry ``[k, i, j]`` is 1 when output pixel i reads input pixel j
    through tap ``k - radius``, indices mirrored at the edges without repeating the edge pixel."""
    key = (radius, size, str(device))
    if key not in _taps_cache:
        i = torch.arange(size)
        taps = torch.zeros(2 * radius + 1, size, size)
        for k in range(2 * radius + 1):
            j = (i + k - radius).abs()  # mirror below 0: -1 -> 1
            j = torch.where(j > size - 1, 2 * (size - 1) - j, j)  # mirror above: size -> size - 2
            taps[k].index_put_((i, j), torch.ones(size), accumulate=True)
        _taps_cache[key] = taps.to(device)
    return _taps_cache[key]


def _discrete_gaussian(sigma: Tensor, radius: int) -> Tensor:
    """Lindeberg's (1990) discrete Gaussian kernel ``exp(-t) I_k(t)``, ``t = sigma^2``, taps -radius..radius.

    Unlike a sampled Gaussian it has variance exactly ``sigma^2`` even below a pixel (a sampled
    Gaussian of sigma 0.3 px is nearly a delta), is the identity at sigma 0, and composes like the
    continuous one. ``I_k`` by its power series; normalised to sum 1 after truncation (flux kept).

    Args:
        sigma: ``(M,)`` sigmas in pixels.
        radius: half-width of the kernel.

    Returns:
        ``(M, 2 radius + 1)`` float64 kernels.
    """
    t = sigma.to(torch.float64).clamp_min(1e-12).square()[:, None, None]  # (M, 1, 1)
    k = torch.arange(radius + 1, dtype=torch.float64, device=sigma.device)[None, :, None]  # tap |offset|
    terms = 10 + math.ceil(2 * float(t.max()))
    j = torch.arange(terms, dtype=torch.float64, device=sigma.device)[None, None, :]
    log_term = (2 * j + k) * torch.log(t / 2) - torch.lgamma(j + 1) - torch.lgamma(j + k + 1)
    half = torch.exp(log_term - t).sum(dim=-1)  # (M, radius+1): exp(-t) I_k(t)
    kernel = torch.cat((half.flip(1)[:, :-1], half), dim=1)
    return kernel / kernel.sum(dim=1, keepdim=True)
