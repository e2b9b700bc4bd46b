"""Aperture photometry in the latent: what identifies a star or a compact galaxy across observations.

A second observation of an object changes its PSF (seeing scatters by about 10% in FWHM), which moves a
star's peak by a factor 0.6-1.8, while its fluxes in a wide enough aperture stay the same. A
convolutional encoder reading asinh-stretched pixels estimates integrated flux poorly, so the
encoder's latent gets a linear map of the stamp's aperture fluxes added to it: per band, the flux
within circles of radius 1/16, 2/16 and 3/16 of the stamp side (4, 8 and 12 pixels, about 1, 2 and 3
arcsec, for a 64-pixel DES stamp) about the stamp centre, which is the object's centroid in the pose
frame. Circles about the centre are unchanged by the eight flips and quarter turns of the stamp and,
up to pixelisation, by any rotation; the largest holds almost all of a star's light at DES seeing.
Measured on the simulated survey (docs/train.md): these 12 fluxes alone, with no network, find the
second observation of 0.88 of the stars and 0.94 of the galaxies with r < 20 at rank 1.

Each flux is scaled to the sky noise in its aperture and stretched, ``asinh(F / (sigma_sky sqrt(A)))``
(an aperture signal-to-noise on the same asinh scale as the pixels, Lupton et al. 1999).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from galmoco.data.normalize import Normalizer

__all__ = ["APERTURE_FRACTIONS", "PhotometricEncoder", "aperture_masks", "aperture_photometry",
           "boxed_apertures"]

#: aperture radii as fractions of the stamp side
APERTURE_FRACTIONS: tuple[float, ...] = (1 / 16, 2 / 16, 3 / 16)


def aperture_masks(size: int, radii: Sequence[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(R, size, size)`` float32: 1 for the pixels whose centre lies within each radius of the centre.

    The stamp centre is at 0-based ``((size - 1) / 2, (size - 1) / 2)``, so every mask is unchanged by
    the eight symmetries of the square.

    Args:
        size: stamp side in pixels.
        radii: aperture radii in pixels.
        device: where to build them.
    """
    u = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    r2 = u[None, :] ** 2 + u[:, None] ** 2
    return torch.stack([(r2 <= r**2).to(torch.float32) for r in radii])


def boxed_apertures(size: int, radii: Sequence[float],
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, slice]:
    """The masks of :func:`aperture_masks` cut to the central box that holds every aperture, and that box.

    The box is found in plain Python (no tensor is read back), so a compiled encoder does not break its
    graph here.

    Args:
        size: stamp side in pixels.
        radii: aperture radii in pixels.
        device: where to build the masks.

    Returns:
        ``(R, S, S)`` masks and the box as a slice of either stamp axis.
    """
    centre = (size - 1) / 2
    # the nearest pixel centre across the other axis is 0 (odd size) or 0.5 (even size) pixels away
    across2 = (centre % 1) ** 2
    inside = [i for i in range(size) if (i - centre) ** 2 + across2 <= max(radii) ** 2]
    box = slice(inside[0], inside[-1] + 1)
    return aperture_masks(size, radii, device)[:, box, box].contiguous(), box


def aperture_photometry(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Flux within each aperture, per stamp and band.

    Args:
        images: ``(N, B, H, W)`` raw flux.
        masks: ``(R, H, W)`` from :func:`aperture_masks`.

    Returns:
        ``(N, B, R)`` summed flux, in the images' units.
    """
    return torch.einsum("nbhw,rhw->nbr", images, masks.to(images.dtype))


class PhotometricEncoder(nn.Module):
    """An encoder whose latent also carries a linear map of the stamp's aperture photometry.

    ``latent = encoder(x) + W p(x)`` with ``p`` the stretched aperture fluxes (module docstring). It
    reads the same normalised stamps as the encoder it wraps and recovers the flux through
    ``normalizer.in_sky_sigmas``, so MoCo's momentum copy of it is a copy of both parts. The radii are fixed
    in pixels by the stamp size the model is built for; stamps of another size (``embed
    --allow-size``) are measured in the same apertures about their own centre.

    Args:
        encoder: the convolutional encoder, ``(N, B, H, W)`` -> ``(N, latent_dim)``.
        normalizer: the model's flux normalisation (its sky sigma scales the fluxes).
        latent_dim: size of the latent.
        size: stamp side in pixels the model is built for.
        fractions: aperture radii as fractions of that side.
    """

    def __init__(self, encoder: nn.Module, normalizer: Normalizer, latent_dim: int, size: int,
                 fractions: Sequence[float] = APERTURE_FRACTIONS) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalizer = normalizer
        self.radii = tuple(f * size for f in fractions)
        self.photometry = nn.Linear(normalizer.sky_sigma.numel() * len(self.radii), latent_dim)
        self.size = size
        # the masks of the built size move with the module and stay out of the state dict
        masks, self.box = boxed_apertures(size, self.radii)
        self.register_buffer("masks", masks, persistent=False)

    def apertures(self, size: int, device: torch.device) -> tuple[torch.Tensor, slice]:
        """``(R, S, S)`` masks over the central box of side ``S`` that holds every aperture, and that box
        as a slice of a stamp of side ``size``: only the box is read."""
        if size == self.size:
            return self.masks, self.box
        return boxed_apertures(size, self.radii, device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B * R)`` stretched aperture fluxes of normalised stamps ``x``."""
        masks, box = self.apertures(x.shape[-1], x.device)
        # in units of each band's sky sigma, so the aperture's noise is sqrt(its area)
        flux = aperture_photometry(self.normalizer.in_sky_sigmas(x[..., box, box].float()), masks)
        return torch.asinh(flux / masks.sum(dim=(1, 2)).sqrt()).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B, H, W)`` normalised -> ``(N, latent_dim)``."""
        return self.encoder(x) + self.photometry(self.features(x)).to(x.dtype)
