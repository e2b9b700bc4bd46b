"""Flux normalisation: raw survey flux to the network's input scale, and the per-band sky noise it uses.

Two conventions are offered (see ``docs/data.md``):

- ``"asinh"`` (default): ``asinh(x / b)`` per band with softening ``b = softening_sigmas * sigma_sky``.
  Linear (``x / b``) within the noise, logarithmic (``log(2 x / b)``) for bright pixels, finite and odd
  for negative sky pixels: the per-band version of Lupton, Gunn & Szalay (1999) "asinh magnitudes".
- ``"log10"``: the original DES MoCo-autoencoder study: ``log10`` of the flux with a floor; pixels at or
  below the floor (all non-positive pixels included) are set to the floor. Here the flux is first
  divided by the band's sky sigma, so the output is ``log10(max(x / sigma_sky, log10_floor))``; the
  floor is in units of sky sigma (default 0.1 sigma, i.e. an output of -1). Dividing by the sky sigma
  only shifts each band by a constant in log space but makes the floor mean the same in every band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from galmoco.errors import GalmocoError

__all__ = ["NormalizeConfig", "Normalizer", "asinh", "estimate_sky_sigma", "estimate_store_sky_sigma"]

METHODS = ("asinh", "log10")


def asinh(values: Tensor) -> Tensor:
    """``torch.asinh``, computed by NumPy's vectorised ``arcsinh`` for CPU tensors outside autograd.

    torch's CPU ``asinh`` is elementwise scalar code: on a batch of 64 4x64x64 stamps it took 12 ms on
    one thread where NumPy took 0.5 ms (same float32 results to 1 ulp), and it was the largest
    single cost of a CPU training step after the convolutions (benchmarks/RESULTS.md).

    Args:
        values: any shape, any device.

    Returns:
        ``asinh(values)``, same shape, dtype and device.
    """
    on_numpy = values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)
    if values.requires_grad or not on_numpy:
        return torch.asinh(values)
    return torch.from_numpy(np.arcsinh(values.numpy()))


#: MAD -> Gaussian sigma
_MAD_TO_SIGMA = 1.4826


@dataclass
class NormalizeConfig:
    """How raw flux becomes network input.

    Attributes:
        method: ``"asinh"`` or ``"log10"`` (see the module docstring).
        softening_sigmas: asinh softening in units of the band's sky sigma (1: linear within the noise).
        log10_floor: the log10 floor in units of the band's sky sigma; pixels below it (all pixels
            <= 0 included) are set to it, so the output is >= ``log10(log10_floor)``.
    """

    method: str = "asinh"
    softening_sigmas: float = 1.0
    log10_floor: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GalmocoError(f"normalisation method {self.method!r} is unknown; "
                               f"use one of {', '.join(METHODS)}")
        if not self.softening_sigmas > 0:
            raise GalmocoError(f"softening_sigmas must be > 0, got {self.softening_sigmas}")
        if not self.log10_floor > 0:
            raise GalmocoError(f"log10_floor must be > 0 (in sky sigmas), got {self.log10_floor}")


class Normalizer(torch.nn.Module):
    """Raw flux ``(N, B, H, W)`` to the network's input space; sky sigma is a buffer (saved in checkpoints).

    Args:
        config: the method and its constants.
        sky_sigma: per-band sky noise in the store's flux units, length B (see :func:`estimate_sky_sigma`).
    """

    sky_sigma: Tensor

    def __init__(self, config: NormalizeConfig, sky_sigma: Sequence[float]):
        super().__init__()
        sigma = torch.as_tensor(np.asarray(sky_sigma, dtype=np.float32)).reshape(-1)
        if sigma.numel() == 0 or not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
            raise GalmocoError(f"sky_sigma must be finite and > 0 per band, got {sigma.tolist()}")
        self.config = config
        self.register_buffer("sky_sigma", sigma)

    def _scale(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.sky_sigma.numel():
            raise GalmocoError(f"expected images (N, {self.sky_sigma.numel()}, H, W), "
                               f"got {tuple(images.shape)}")
        return self.sky_sigma.to(images.dtype).view(1, -1, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        """Normalise a batch.

        Args:
            images: ``(N, B, H, W)`` raw flux (store units).

        Returns:
            ``(N, B, H, W)`` in the network's input space: the sky is ~N(0, 1) (asinh) or near 0 (log10),
            bright galaxy cores reach about 5 to 10 (asinh) or 2 to 4 (log10).
        """
        sigma = self._scale(images)
        if self.config.method == "asinh":
            return asinh(images / (self.config.softening_sigmas * sigma))
        return torch.log10(torch.clamp(images / sigma, min=self.config.log10_floor))

    def inverse(self, values: Tensor) -> Tensor:
        """Map network-space values (e.g. reconstructions) back to raw flux (log10 floors stay the floor).

        Args:
            values: ``(N, B, H, W)`` in the network's input space.

        Returns:
            ``(N, B, H, W)`` raw flux in store units.
        """
        sigma = self._scale(values)
        if self.config.method == "asinh":
            return torch.sinh(values) * (self.config.softening_sigmas * sigma)
        return torch.pow(10.0, values) * sigma

    def in_sky_sigmas(self, values: Tensor) -> Tensor:
        """Network-space values back to raw flux in units of each band's sky sigma, for where speed matters
        more than the last digits (the pose frame's size of an object, every batch).

        Args:
            values: ``(N, B, H, W)`` in the network's input space.

        Returns:
            ``(N, B, H, W)`` :meth:`inverse` ``/ sky_sigma``, to about 1e-6 sky sigma (asinh through
            ``exp``: ``torch.sinh`` is several times slower on CPU).
        """
        self._scale(values)
        if self.config.method == "asinh":
            grow = torch.exp(values)
            return grow.sub_(grow.reciprocal()).mul_(self.config.softening_sigmas / 2)
        return torch.pow(10.0, values)


def _clipped_mad_sigma(values: np.ndarray, n_sigma: float = 3.0, iterations: int = 5) -> float:
    """Robust Gaussian sigma of ``values``: MAD after iterative ``n_sigma`` clipping about the median."""
    keep = values
    sigma = float("nan")
    for _ in range(iterations):
        if keep.size == 0:
            break
        med = np.median(keep)
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(keep - med)))
        if sigma == 0:
            break
        clipped = keep[np.abs(keep - med) <= n_sigma * sigma]
        if clipped.size == keep.size:
            break
        keep = clipped
    return sigma


def estimate_sky_sigma(images: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Robust per-band sky noise of one stamp ``(B, H, W)`` or a stack ``(N, B, H, W)``.

    Per band: the median of ``1 / sqrt(weight)`` over the pixels with positive weight (weights are
    inverse variances); where the band has no positive weight (or no weights are given), the MAD of the
    pixel values after iterative 3-sigma clipping (which removes the galaxies), times 1.4826. Non-finite
    pixels and exact zeros (padding) are ignored by the MAD.

    Args:
        images: ``(B, H, W)`` or ``(N, B, H, W)`` flux.
        weights: inverse-variance weights of the same shape, or None.

    Returns:
        ``(B,)`` float64 sky sigma in the images' flux units.

    Raises:
        GalmocoError: a band has no usable pixel or a zero noise estimate.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise GalmocoError(f"expected images (B, H, W) or (N, B, H, W), got shape {images.shape}")
    if weights is not None:
        weights = np.asarray(weights).reshape(images.shape)
    sigma = np.empty(images.shape[1])
    for b in range(images.shape[1]):
        w = None if weights is None else weights[:, b]
        positive = None if w is None else w[np.isfinite(w) & (w > 0)]
        if positive is not None and positive.size:
            sigma[b] = float(np.median(1.0 / np.sqrt(positive)))
            continue
        x = images[:, b].ravel()
        sigma[b] = _clipped_mad_sigma(x[np.isfinite(x) & (x != 0)].astype(np.float64))
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise GalmocoError(f"could not estimate the sky noise: per-band estimates {sigma.tolist()} "
                           "(images empty, constant or without positive weights)")
    return sigma


def estimate_store_sky_sigma(store_path: str | Path, max_objects: int = 2000, seed: int = 0,
                             block: int = 256) -> np.ndarray:
    """Per-band sky sigma of a packed store from a random sample of its objects.

    The sample is read in blocks of ``block`` objects; each block gets :func:`estimate_sky_sigma` and the
    result is the per-band median over blocks (robust to a block dominated by a bright neighbour).

    Args:
        store_path: the packed HDF5 store (``/images``, ``/weights``).
        max_objects: sample size (all objects when the store is smaller).
        seed: seed of the sample.
        block: objects per read.

    Returns:
        ``(B,)`` float64 sky sigma in the store's flux units.
    """
    path = Path(store_path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise GalmocoError(f"{path}: cannot open the store ({exc})") from exc
    with h5:
        if "images" not in h5:
            raise GalmocoError(f"{path}: not a galmoco store (no /images dataset)")
        n = h5["images"].shape[0]
        if n == 0:
            raise GalmocoError(f"{path}: the store holds no objects")
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(n, size=min(n, max_objects), replace=False))
        estimates = []
        for start in range(0, chosen.size, block):
            rows = chosen[start:start + block]
            weights = h5["weights"][rows] if "weights" in h5 else None
            estimates.append(estimate_sky_sigma(h5["images"][rows], weights))
    return np.median(np.stack(estimates), axis=0)

