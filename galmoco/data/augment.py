"""Batched augmentations for galaxy stamps, on tensors on the training device.

The views MoCo contrasts must differ in what the latent space should ignore (orientation, position,
seeing, depth, brightness) and agree in what it should keep (morphology, colour). Hence: the 8
symmetries of the square, an arbitrary rotation, a jitter shift, a change of seeing (a Moffat PSF made
wider or sharper, :mod:`galmoco.data.psf`) or a PSF-difference blur, noise injection and a flux scale
common to all bands; no colour jitter or grayscale (MoCo v2's ImageNet recipe), which
would change the galaxy's colours, i.e. its physics. ``aug_plus`` maps v2's stronger recipe to astronomy
(see :class:`AugmentConfig` and ``docs/data.md``).

MoCo's two views start from a recorrupted pair (:meth:`GalaxyAugment.pair`), so their noise fields
are independent, as two observations' are.

Everything is drawn up front by :meth:`GalaxyAugment.sample` as per-stamp parameters, then applied by
:meth:`GalaxyAugment.apply` with batched tensor operations: one gather (symmetries and integer shifts,
exact) or one ``grid_sample`` (with an arbitrary rotation) for the geometry, one real FFT pair for the
seeing, two banded matmuls for the blur, one normal draw for the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from galmoco.data.psf import change_seeing, gaussian_blur
from galmoco.data.transforms import SYMMETRIES
from galmoco.errors import GalmocoError
from galmoco.surveys import DES_PIXEL_SCALE, DES_PSF_FWHM

__all__ = ["AugmentConfig", "AugmentParams", "GalaxyAugment", "SYMMETRY_MATRICES"]

#: aug+: blur FWHM and noise amplitude maxima are multiplied by this, probabilities raised to AUG_PLUS_PROB
AUG_PLUS_FACTOR = 2.0
AUG_PLUS_PROB = 0.8
#: aug+: per-band flux scatter, uniform in +-this many magnitudes (0.05 mag = 4.7 % in flux)
AUG_PLUS_COLOUR_MAG = 0.05
#: Gaussian FWHM / sigma
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: each element of :data:`~galmoco.data.transforms.SYMMETRIES` as the 2x2 matrix taking output
#: coordinates ``(x, y)`` (x along columns, y along rows, origin at the stamp centre) to input coordinates
SYMMETRY_MATRICES = torch.tensor([
    [[1, 0], [0, 1]],     # identity
    [[1, 0], [0, -1]],    # flip1: rows reversed
    [[-1, 0], [0, 1]],    # flip2: columns reversed
    [[-1, 0], [0, -1]],   # flip3
    [[0, -1], [1, 0]],    # rot90 (torch.rot90 k=1): out[i, j] = in[j, W-1-i]
    [[0, 1], [-1, 0]],    # rot270: out[i, j] = in[H-1-j, i]
    [[0, 1], [1, 0]],     # transpose
    [[0, -1], [-1, 0]],   # antitranspose: out[i, j] = in[H-1-j, W-1-i]
], dtype=torch.float32)


@dataclass
class AugmentConfig:
    """The galmoco augmentation recipe (the defaults).

    Attributes:
        symmetries: apply a uniformly random element of the square's symmetry group D4 per stamp.
        rotate: add an arbitrary rotation, uniform in [0, 360) degrees (bilinear, reflect padding).
            ``None`` (default): on, unless the training configuration says otherwise
            (``TrainConfig.augment_config``: off when the encoder reads every stamp in its pose frame,
            which turns all views of a galaxy to the same angle whatever their rotation).
        jitter: maximum shift in pixels along each axis, integer, uniform (the stamp keeps its size; the
            uncovered edge is filled by reflection), standing in for a jitter crop.
        blur_prob: probability that a stamp is blurred (PSF-difference blur, wider only). A batch of N
            blurs floor(pN) or floor(pN) + 1 stamps chosen at random (probability exactly p per stamp;
            the same holds for ``noise_prob``). 0 by default: ``seeing_scatter`` changes the seeing
            both ways and with the PSF's shape (docs/train.md measures both).
        blur_max_fwhm: maximum FWHM in pixels of the extra Gaussian; each band draws its own FWHM
            uniformly in [0, max] (seeing differs per band and per exposure).
        noise_prob: probability that a stamp gets extra Gaussian noise (a shallower observation); 0 by
            default, as ``split_noise`` already gives each view 1.1-2.2 times the stored noise.
        noise_max_sigmas: maximum extra noise in units of the band's sky sigma; each band draws its own
            amplitude uniformly in [0, max].
        flux_scale: the stamp's flux is multiplied by a log-uniform factor in [1/(1+s), 1+s], the same in
            every band (colours kept): the same galaxy nearer or farther, brighter or fainter.
        band_dropout: probability that one uniformly chosen band of a stamp is set to zero flux.
        seeing_scatter: standard deviation of the natural log of the PSF FWHM ratio between the two
            views of a MoCo pair (:meth:`GalaxyAugment.pair`: one view keeps the stored seeing, the
            other is seen through a Moffat PSF made wider or sharper, :func:`galmoco.data.psf.
            change_seeing`), or of a single view to the stored stamp (:meth:`GalaxyAugment.apply`);
            70% common to all bands, as seeing is. Two observations of the simulated survey differ by
            0.14 (DES seeing scatters by 0.1 per exposure); the default 0.28 trains for twice that,
            which measured better (docs/train.md). 0: off.
        psf_fwhm: the stored stamps' PSF FWHM in pixels that ``seeing_scatter`` scales (default: the
            DES DR2 median in the r band, 0.95 arcsec at 0.263 arcsec/pixel).
        aug_plus: v2's "aug+" for astronomy: blur and noise maxima times 2 and probabilities at least
            0.8, plus a small independent per-band flux scatter (+-0.05 mag, "reddening" and calibration
            differences) in place of colour jitter and grayscale.
        split_noise: the two views of a pair get independent noise fields (:meth:`GalaxyAugment.pair`),
            as a second observation does; otherwise both carry the stored stamp's noise.
        split_noise_ratio: with ``split_noise``, the recorruption factor ``alpha`` of each stamp and band
            is log-uniform in [1/ratio, ratio], so the two views' depths differ too (their noise sigmas
            are ``sqrt(1 + alpha^2)`` and ``sqrt(1 + alpha^-2)`` times the stored one); 1: both
            ``sqrt(2)``.
    """

    symmetries: bool = True
    rotate: bool | None = None
    jitter: int = 4
    blur_prob: float = 0.0
    blur_max_fwhm: float = 1.5
    noise_prob: float = 0.0
    noise_max_sigmas: float = 1.0
    flux_scale: float = 0.2
    band_dropout: float = 0.0
    seeing_scatter: float = 0.28
    psf_fwhm: float = DES_PSF_FWHM["r"] / DES_PIXEL_SCALE
    aug_plus: bool = False
    split_noise: bool = True
    split_noise_ratio: float = 2.0

    def __post_init__(self) -> None:
        for name in ("blur_prob", "noise_prob", "band_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise GalmocoError(f"augmentation {name} must be a probability in [0, 1], "
                                   f"got {getattr(self, name)}")
        if not self.split_noise_ratio >= 1:
            raise GalmocoError(f"augmentation split_noise_ratio must be >= 1, got {self.split_noise_ratio}")
        for name in ("jitter", "blur_max_fwhm", "noise_max_sigmas", "flux_scale", "seeing_scatter"):
            if getattr(self, name) < 0:
                raise GalmocoError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")


def _effective(config: AugmentConfig) -> AugmentConfig:
    """The config with ``aug_plus`` resolved into the plain parameters (aug_plus kept as the colour flag)."""
    if not config.aug_plus:
        return config
    return replace(config, blur_prob=max(config.blur_prob, AUG_PLUS_PROB),
                   blur_max_fwhm=AUG_PLUS_FACTOR * config.blur_max_fwhm,
                   noise_prob=max(config.noise_prob, AUG_PLUS_PROB),
                   noise_max_sigmas=AUG_PLUS_FACTOR * config.noise_max_sigmas)


@dataclass
class AugmentParams:
    """Per-stamp draws of one :meth:`GalaxyAugment.sample`, all on the images' device.

    Attributes:
        symmetry: ``(N,)`` int64 index into :data:`~galmoco.data.transforms.SYMMETRIES`.
        angle: ``(N,)`` rotation angle in radians, or None when rotation is off.
        shift: ``(N, 2)`` int64 shift ``(dx, dy)`` in pixels of the content (columns, rows).
        scale: ``(N, B)`` flux factor per band.
        blur_sigma: ``(N, B)`` Gaussian sigma in pixels (0: not blurred).
        noise_sigma: ``(N, B)`` added noise sigma in flux units (0: none).
        dropped_band: ``(N,)`` int64 band set to zero, -1 for none.
        seeing_ratio: ``(N, B)`` new PSF FWHM over the stored one, or None when ``seeing_scatter`` is 0.
    """

    symmetry: Tensor
    angle: Tensor | None
    shift: Tensor
    scale: Tensor
    blur_sigma: Tensor
    noise_sigma: Tensor
    dropped_band: Tensor
    seeing_ratio: Tensor | None = None

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same draws on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return AugmentParams(**{k: None if v is None else v.to(device) for k, v in values.items()})


def _reflect(index: Tensor, size: int) -> Tensor:
    """Fold integer pixel indices into [0, size) by mirror reflection about the outer pixel edges
    (..., 1, 0 | 0, 1, ..., size-1 | size-1, ...), as ``grid_sample(padding_mode="reflection")``."""
    index = index.remainder(2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def _pixel_index(matrix: Tensor, shift: Tensor, size: int) -> Tensor:
    """Flat input-pixel index ``(N, 1, size*size)`` of each output pixel for D4 matrices and integer shifts.

    ``in = M (out - centre) + centre - shift`` with pixel centres at integers. Each row of a D4 matrix has
    one non-zero entry, so each input coordinate depends on one output coordinate: the index is a
    per-column plus a per-row term, reflected in 1-d and added in one broadcast pass.
    """
    centre = (size - 1) / 2
    u = torch.arange(size, device=matrix.device, dtype=torch.float32) - centre
    offset = centre - shift.to(torch.float32)  # (N, 2)
    stride = torch.tensor([1, size], device=matrix.device)  # x moves along columns, y along rows

    def term(axis: int) -> Tensor:  # contribution of output coordinate `axis` (0: column, 1: row)
        m = matrix[:, :, axis]  # (N, 2): d(in_x, in_y)/d(out_axis)
        coord = _reflect((m[:, :, None] * u + offset[:, :, None]).round().long(), size)  # (N, 2, size)
        return ((m != 0).long()[:, :, None] * coord * stride[None, :, None]).sum(dim=1)  # (N, size)

    return (term(0)[:, None, :] + term(1)[:, :, None]).reshape(-1, 1, size * size)


class GalaxyAugment(torch.nn.Module):
    """Random augmentation of raw-flux stamps ``(N, B, H, W)``; square stamps.

    Args:
        config: the recipe.
        sky_sigma: per-band sky noise in the images' flux units (sets the injected noise).
    """

    sky_sigma: Tensor

    def __init__(self, config: AugmentConfig, sky_sigma: Sequence[float]):
        super().__init__()
        self.config = config
        self.effective = _effective(config)
        sigma = torch.as_tensor(np.asarray(sky_sigma, dtype=np.float32)).reshape(-1)
        if sigma.numel() == 0 or not bool(torch.all(torch.isfinite(sigma) & (sigma >= 0))):
            raise GalmocoError(f"sky_sigma must be finite and >= 0 per band, got {sigma.tolist()}")
        self.register_buffer("sky_sigma", sigma)
        # kernel half-width: 3 sigma of the widest blur (the tail beyond holds < 0.3 % of the weight),
        # fixed so that shapes never depend on the draws
        self.blur_radius = max(1, math.ceil(3 * self.effective.blur_max_fwhm / _FWHM_PER_SIGMA))

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch: :meth:`sample` then :meth:`apply`.

        Args:
            images: ``(N, B, H, W)`` raw flux, float.
            generator: source of randomness (deterministic given its state); the global RNG when None.
                Best on the images' device: the noise field is drawn on the generator's device.

        Returns:
            ``(N, B, H, W)`` augmented raw flux on the same device; the input is not modified.
        """
        return self.apply(images, self.sample(images.shape[0], images.device, generator), generator)

    def pair(self, images: Tensor, generator: torch.Generator | None = None,
             seeing_ratio: Tensor | None = None) -> Tensor:
        """Two copies of each stamp to augment into a positive pair: ``(2N, B, H, W)``, first copies then
        second copies.

        With ``seeing_ratio``, one copy of each stamp, chosen at random, is first seen through a PSF
        whose FWHM is that ratio of the stored one (:func:`galmoco.data.psf.change_seeing`), as a second
        observation is relative to the first; one Fourier transform pair per stamp.

        With ``split_noise`` the copies are then recorrupted (Pang et al. 2021, "Recorrupted-to-
        Recorrupted", CVPR): a field ``z ~ N(0, sky_sigma^2)`` is drawn per stamp and ``alpha z`` is
        added to the first copy, ``z / alpha`` subtracted from the second. With the stored noise ``n``
        of the same sigma, ``E[(n + alpha z)(n - z / alpha)] = 0``: the copies' noises are
        uncorrelated, so (Gaussian) independent, as a second observation's would be, and a pair cannot
        be matched by its noise pattern. ``alpha`` (``split_noise_ratio``) varies the two depths. Exact
        for white sky-dominated noise; a galaxy's own Poisson noise stays shared.

        Args:
            images: ``(N, B, H, W)`` raw flux.
            generator: source of the copy that changes seeing, ``z`` and ``alpha`` (the global RNG when
                None).
            seeing_ratio: ``(N, B)`` FWHM ratio of the changed copy's PSF to the stored one, or None.

        Returns:
            ``(2N, B, H, W)``; without ``split_noise`` and ``seeing_ratio``, the stamps twice.
        """
        gdev = generator.device if generator is not None else images.device
        n, nb = images.shape[:2]
        first, second = images, images
        if seeing_ratio is not None:
            changed = change_seeing(images, seeing_ratio, self.config.psf_fwhm)
            swap = torch.rand(n, generator=generator, device=gdev) < 0.5
            swap = swap.to(images.device)[:, None, None, None]
            first, second = torch.where(swap, changed, images), torch.where(swap, images, changed)
        if not self.config.split_noise:
            return torch.cat([first, second])
        z = torch.randn(images.shape, generator=generator, device=gdev, dtype=images.dtype).to(images.device)
        log_ratio = math.log(self.config.split_noise_ratio)
        alpha = torch.exp((2 * torch.rand(n, nb, generator=generator, device=gdev) - 1) * log_ratio)
        alpha = alpha.to(images.device, images.dtype)[:, :, None, None]
        z.mul_(alpha * self.sky_sigma.to(images.dtype)[None, :, None, None])  # alpha z
        return torch.cat([first + z, second - z.div_(alpha.square())])  # minus z / alpha

    def views(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, AugmentParams]:
        """MoCo's positive pairs: both augmented views of each stamp and their draws.

        The pair (:meth:`pair`: one copy's seeing changed, the noise recorrupted), then :meth:`apply`
        with independent draws per copy, both views in one batched call.

        Args:
            images: ``(N, B, H, W)`` raw flux.
            generator: source of randomness (deterministic given its state).

        Returns:
            ``(2N, B, H, W)`` views (first views, then second views) and the ``2N`` draws of
            :meth:`apply` (``seeing_ratio`` None: the seeing was changed in the pair).
        """
        n = images.shape[0]
        params = self.sample(2 * n, images.device, generator)
        seeing = None if params.seeing_ratio is None else params.seeing_ratio[:n]
        params = replace(params, seeing_ratio=None)
        return self.apply(self.pair(images, generator, seeing), params, generator), params

    def sample(self, n: int, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the parameters of ``n`` stamps (on the generator's device, returned on ``device``)."""
        c = self.effective
        gdev = generator.device if generator is not None else torch.device(device)
        nb = self.sky_sigma.numel()

        def uniform(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=gdev)

        def chosen(prob: float) -> Tensor:
            # floor(p n) or floor(p n) + 1 stamps (each with probability exactly p): the batch's share
            # varies less than with independent draws, and so does the time an augmentation takes
            count = math.floor(prob * n) + int(uniform(1).item() < prob * n % 1)
            picked = torch.zeros(n, 1, device=gdev)
            picked[torch.randperm(n, generator=generator, device=gdev)[:count]] = 1.0
            return picked

        symmetry = (torch.randint(0, len(SYMMETRIES), (n,), generator=generator, device=gdev)
                    if c.symmetries else torch.zeros(n, dtype=torch.long, device=gdev))
        angle = uniform(n) * (2 * math.pi) if c.rotate is not False else None
        shift = torch.randint(-c.jitter, c.jitter + 1, (n, 2), generator=generator, device=gdev)
        log_scale = (2 * uniform(n, 1) - 1) * math.log1p(c.flux_scale)
        if c.aug_plus:
            log_scale = log_scale + (2 * uniform(n, nb) - 1) * (0.4 * math.log(10) * AUG_PLUS_COLOUR_MAG)
        blur_sigma = chosen(c.blur_prob) * uniform(n, nb) * (c.blur_max_fwhm / _FWHM_PER_SIGMA)
        noise_sigma = chosen(c.noise_prob) * uniform(n, nb) * c.noise_max_sigmas * self.sky_sigma.to(gdev)
        drop = uniform(n) < c.band_dropout
        band = torch.randint(0, nb, (n,), generator=generator, device=gdev)
        seeing = None  # drawn last, and only when on, so that the other draws do not depend on it
        if c.seeing_scatter > 0:
            normal = torch.randn((n, nb + 1), generator=generator, device=gdev)
            log_ratio = math.sqrt(0.7) * normal[:, :1] + math.sqrt(0.3) * normal[:, 1:]
            seeing = torch.exp(c.seeing_scatter * log_ratio)
        params = AugmentParams(symmetry=symmetry, angle=angle, shift=shift,
                               scale=torch.exp(log_scale).expand(n, nb).contiguous(),
                               blur_sigma=blur_sigma, noise_sigma=noise_sigma,
                               dropped_band=torch.where(drop, band, torch.full_like(band, -1)),
                               seeing_ratio=seeing)
        return params.to(device)

    def apply(self, images: Tensor, params: AugmentParams,
              generator: torch.Generator | None = None) -> Tensor:
        """Apply drawn parameters: geometry, flux scale, blur, noise (drawn from ``generator``), band dropout.

        Args:
            images: ``(N, B, H, W)`` raw flux.
            params: from :meth:`sample` for N stamps.
            generator: source of the noise field.

        Returns:
            ``(N, B, H, W)`` augmented raw flux (a new tensor).
        """
        n, nb = images.shape[:2]
        if images.dim() != 4 or nb != self.sky_sigma.numel():
            raise GalmocoError(f"expected images (N, {self.sky_sigma.numel()}, H, W) to augment, "
                               f"got {tuple(images.shape)}")
        x = self.apply_geometry(images, params)
        x.mul_(params.scale.to(x.dtype)[:, :, None, None])
        if params.seeing_ratio is not None:
            x = change_seeing(x, params.seeing_ratio, self.config.psf_fwhm)
        blurred = (params.blur_sigma > 0).any(dim=1).nonzero(as_tuple=True)[0]
        if blurred.numel():
            x.index_copy_(0, blurred, gaussian_blur(x[blurred], params.blur_sigma[blurred], self.blur_radius))
        noisy = (params.noise_sigma > 0).any(dim=1).nonzero(as_tuple=True)[0]
        if noisy.numel():
            gdev = generator.device if generator is not None else x.device
            noise = torch.randn((noisy.numel(),) + tuple(x.shape[1:]), generator=generator, device=gdev,
                                dtype=x.dtype).to(x.device)
            x.index_add_(0, noisy, noise.mul_(params.noise_sigma[noisy].to(x.dtype)[:, :, None, None]))
        dropped = (params.dropped_band >= 0).nonzero(as_tuple=True)[0]
        if dropped.numel():
            x[dropped, params.dropped_band[dropped]] = 0.0
        return x

    def apply_geometry(self, maps: Tensor, params: AugmentParams) -> Tensor:
        """Apply only the geometric part (symmetry, rotation, shift) to any per-pixel maps ``(N, C, H, W)``.

        Use it to carry sky masks or weights along with the images they belong to. Without rotation the
        result is an exact permutation of pixels (one gather); with rotation it is bilinear
        (``grid_sample``), reflection padding in both cases.

        Args:
            maps: ``(N, C, H, W)``, square.
            params: from :meth:`sample`.

        Returns:
            A new ``(N, C, H, W)`` tensor.
        """
        n, c, h, w = maps.shape
        if h != w:
            raise GalmocoError(f"augmentations need square stamps, got {h}x{w}")
        matrix = SYMMETRY_MATRICES.to(maps.device)[params.symmetry]  # (N, 2, 2)
        shift = params.shift.to(maps.device)
        if params.angle is None:
            if not (params.symmetry.any() or shift.any()):
                return maps.clone()
            return maps.reshape(n, c, h * w).gather(2, _pixel_index(matrix, shift, w).expand(n, c, h * w)) \
                .reshape(n, c, h, w)
        cos, sin = torch.cos(params.angle), torch.sin(params.angle)
        rotation = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)
        theta = matrix @ rotation.to(maps.device, torch.float32)  # (N, 2, 2)
        # the affine grid (align_corners=False) as a per-column plus a per-row term, computed as (N, 2, H, W)
        # with W innermost and handed over as a permuted view: a fraction of affine_grid's cost
        lin = (2 * torch.arange(w, device=maps.device, dtype=torch.float32) + 1) / w - 1
        grid = (theta[:, :, 0, None, None] * lin[None, None, None, :]
                + (theta[:, :, 1, None, None] * lin[None, None, :, None] - 2.0 * shift[:, :, None, None] / w))
        return F.grid_sample(maps, grid.permute(0, 2, 3, 1).to(maps.dtype), mode="bilinear",
                             padding_mode="reflection", align_corners=False)
