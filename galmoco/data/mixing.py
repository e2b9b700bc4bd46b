"""Image mixtures for contrastive learning (Un-Mix), batched on tensors on the training device.

Un-Mix (Shen et al. 2022, "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual Representation
Learning", AAAI; github.com/szq0214/Un-Mix and its CMC port szq0214/CMC_with_Image_Mixture) mixes
training images so that the contrastive prediction softens: a *global* mixture is mixup
``lam x + (1 - lam) x'`` (``lam ~ Beta(alpha, alpha)``), a *region* mixture is cutmix (a box of area
fraction ``1 - lam`` pasted from ``x'``). Cutout and random erasing are the repository's alternatives.
The repository's options map to :class:`MixConfig` (``--IM_type IM`` is ``method="mixture"``: global
rounds, then region rounds).

Here the partner ``x'`` is another image of the same batch, and only the query view is mixed (the key
stays clean, as in Un-Mix's MoCo code). A mixture is described by :class:`Mixing`: every mixed image is
``sum_s c_s(p) x[source_s](p) + fill(p)`` with per-pixel coefficients ``c_s``, so the same mixing can be
applied to the images, to the reconstruction targets and (normalised) to the loss's pixel weights.

Galaxies sit in the centre of their stamps. A box pasted over the centre replaces the galaxy by the
partner's; a box in a corner adds a neighbour, mostly sky. The soft targets (:func:`soft_targets`) are
therefore each source's share of the mixed image weighted by a centred Gaussian pixel importance
(``centre_sigma``), not by area alone (docs/train.md has the measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["MIX_METHODS", "MixConfig", "Mixing", "apply_mixing", "centre_importance", "mix_pixel_weights",
           "sample_mixing", "soft_targets"]

#: ``none``, then the repository's ``--IM_type`` choices: IM (global then region), global, region,
#: Cutout, RandomErasing
MIX_METHODS: tuple[str, ...] = ("none", "mixture", "global", "region", "cutout", "erasing")


@dataclass
class MixConfig:
    """Image-mixture settings; the defaults are the Un-Mix/CMC repository's (``--g_alpha`` ... ).

    Attributes:
        method: one of :data:`MIX_METHODS` (``--IM --IM_type``); ``"none"`` mixes nothing.
        global_alpha: ``alpha`` of the global mixture's ``Beta(alpha, alpha)`` weight (``--g_alpha``, 1.0).
        global_count: global mixing rounds per image (``--g_num``, 2).
        global_prob: probability that an image is mixed in one global round (``--g_prob``, 0.1).
        region_beta: ``beta`` of the region mixture's ``Beta(beta, beta)`` (``--r_beta``, 1.0); the
            pasted box covers a fraction ``1 - lam`` of the stamp (before clipping at its edges).
        region_prob: probability of a region round (``--r_prob``, 0.1).
        region_count: region rounds per image (``--r_num``, 2).
        region_pixel_decay: the image is multiplied by this when its first region round pastes a box
            (``--r_pixel_decay``, 1.0).
        centre_sigma: sigma of the centred Gaussian pixel importance of the soft targets, as a fraction
            of the stamp side (0.1: 6.4 px on a 64 px stamp, a few half-light radii of a typical
            simulated galaxy); ``None`` weights every pixel alike (the pasted area, as Un-Mix).
        cutout_size: side of the Cutout square as a fraction of the stamp side (``--mask_size`` 50 of
            224 px in the repository); the square is set to 0 (sky) and may be clipped at the edges.
        cutout_prob: probability of Cutout per image (``--cutout_p``, 0.1).
        erasing_prob: probability of random erasing per image (``--random_erasing_prob``, 0.1).
        erasing_area: range of the erased area as fractions of the stamp (``--area_ratio_range``).
        erasing_aspect: smallest aspect ratio of the erased rectangle (``--min_aspect_ratio``, 0.3); the
            rectangle is filled with one value uniform in [0, 1) (network units).
    """

    method: str = "none"
    global_alpha: float = 1.0
    global_count: int = 2
    global_prob: float = 0.1
    region_beta: float = 1.0
    region_prob: float = 0.1
    region_count: int = 2
    region_pixel_decay: float = 1.0
    centre_sigma: float | None = 0.1
    cutout_size: float = 50 / 224
    cutout_prob: float = 0.1
    erasing_prob: float = 0.1
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_aspect: float = 0.3

    def problems(self) -> list[tuple[str, str]]:
        """``(field, expected)`` for every invalid value (empty when all are valid)."""
        lo, hi = self.erasing_area
        checks = [
            (self.method in MIX_METHODS, "method", f"one of {', '.join(MIX_METHODS)}"),
            (self.global_alpha > 0, "global_alpha", "positive"),
            (self.region_beta > 0, "region_beta", "positive"),
            (self.global_count >= 0, "global_count", "0 or more"),
            (self.region_count >= 0, "region_count", "0 or more"),
            (self.region_pixel_decay > 0, "region_pixel_decay", "positive"),
            (self.centre_sigma is None or self.centre_sigma > 0, "centre_sigma", "positive or null"),
            (0 < self.cutout_size <= 1, "cutout_size", "in (0, 1]"),
            (0 < lo <= hi < 1, "erasing_area", "two fractions 0 < low <= high < 1"),
            (0 < self.erasing_aspect <= 1, "erasing_aspect", "in (0, 1]"),
        ]
        checks += [(0 <= getattr(self, name) <= 1, name, "a probability in [0, 1]")
                   for name in ("global_prob", "region_prob", "cutout_prob", "erasing_prob")]
        return [(name, expected) for ok, name, expected in checks if not ok]


@dataclass
class Mixing:
    """One drawn mixture of a batch of ``N`` images of side ``H x W``.

    Attributes:
        sources: ``(N, S)`` long: the batch rows each mixed image is made of (column 0: itself).
        coefficients: ``(N, S, H, W)``: the weight of each source at each pixel.
        fill: ``(N, 1, H, W)``: a constant added where random erasing painted (0 elsewhere).
    """

    sources: Tensor
    coefficients: Tensor
    fill: Tensor


def _beta(n: int, a: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    # torch's Beta sampler takes no generator: seed numpy's from the generator so that draws repeat
    seed = int(torch.randint(2**62, (1,), generator=generator, device=_gen_device(generator, device)))
    return torch.as_tensor(np.random.default_rng(seed).beta(a, a, size=n), dtype=torch.float32, device=device)


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=_gen_device(generator, device)).to(device)


def _partners(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """For each row another row of the batch, uniformly (never itself)."""
    offset = torch.randint(1, max(n, 2), (n,), generator=generator, device=_gen_device(generator, device))
    return (torch.arange(n, device=device) + offset.to(device)) % n


def _box(height: Tensor, width: Tensor, size: tuple[int, int], generator: torch.Generator | None,
         device: torch.device, centred_anywhere: bool = True) -> Tensor:
    """``(N, 1, H, W)`` float masks of boxes ``height x width`` (px, per row) centred uniformly on the
    stamp and clipped at its edges (as Un-Mix's ``rand_bbox``); with ``centred_anywhere`` False the box
    is placed wholly inside the stamp (random erasing)."""
    h, w = size
    n = height.shape[0]
    u = torch.stack([_uniform(n, generator, device), _uniform(n, generator, device)], dim=1)
    if centred_anywhere:
        cy, cx = (u[:, 0] * h).floor(), (u[:, 1] * w).floor()
        y0, x0 = (cy - height // 2).clamp(0, h), (cx - width // 2).clamp(0, w)
        y1, x1 = (cy + height // 2).clamp(0, h), (cx + width // 2).clamp(0, w)
    else:
        y0, x0 = (u[:, 0] * (h - height + 1)).floor(), (u[:, 1] * (w - width + 1)).floor()
        y1, x1 = y0 + height, x0 + width
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    return inside[:, None].float()


def _round_prob(config: MixConfig, kind: str) -> float:
    return {"global": config.global_prob, "region": config.region_prob, "cutout": config.cutout_prob,
            "erasing": config.erasing_prob}[kind]


def _rounds(config: MixConfig) -> list[str]:
    """The rounds a method runs, in order; rounds whose probability is 0 are left out (they draw nothing)."""
    rounds = {
        "mixture": ["global"] * config.global_count + ["region"] * config.region_count,
        "global": ["global"] * config.global_count,
        "region": ["region"] * config.region_count,
        "cutout": ["cutout"],
        "erasing": ["erasing"],
    }.get(config.method, [])
    return [r for r in rounds if _round_prob(config, r) > 0]


class _MixingDraw:
    """The mixture being drawn, round by round (the state of :func:`sample_mixing`)."""

    def __init__(self, n: int, size: tuple[int, int], config: MixConfig, device: torch.device,
                 generator: torch.Generator | None) -> None:
        self.n, self.size, self.config, self.device, self.generator = n, size, config, device, generator
        self.sources = [torch.arange(n, device=device)]
        self.coefficients = [torch.ones(n, 1, *size, device=device)]
        self.fill = torch.zeros(n, 1, *size, device=device)
        self.decayed = False

    def uniform(self) -> Tensor:
        return _uniform(self.n, self.generator, self.device)

    def blank(self, painted: Tensor) -> None:
        """Every source loses the painted pixels."""
        self.coefficients = [c * (1 - painted) for c in self.coefficients]
        self.fill = self.fill * (1 - painted)

    def add_source(self, partner: Tensor, share: Tensor) -> None:
        """The partner takes ``share`` ``(N, 1, 1 or H, 1 or W)`` of every pixel from the others."""
        self.coefficients = [c * (1 - share) for c in self.coefficients]
        self.coefficients.append(share.expand(self.n, 1, *self.size))
        self.sources.append(partner)

    def mix_global(self, picked: Tensor) -> None:
        partner = _partners(self.n, self.generator, self.device)
        lam = _beta(self.n, self.config.global_alpha, self.generator, self.device)[:, None, None, None]
        self.add_source(partner, picked * (1 - lam))

    def mix_region(self, picked: Tensor) -> None:
        h, w = self.size
        partner = _partners(self.n, self.generator, self.device)
        cut = torch.sqrt(1 - _beta(self.n, self.config.region_beta, self.generator, self.device))
        pasted = picked * _box((h * cut).floor(), (w * cut).floor(), self.size, self.generator, self.device)
        if not self.decayed:  # Un-Mix dims the image when its first region round pastes a box
            self.coefficients = [c * (1 - picked * (1 - self.config.region_pixel_decay))
                                 for c in self.coefficients]
            self.decayed = True
        self.add_source(partner, pasted)

    def cutout(self, picked: Tensor) -> None:
        h, w = self.size
        side = torch.full((self.n,), float(max(1, round(self.config.cutout_size * min(h, w)))),
                          device=self.device)
        self.blank(picked * _box(side, side, self.size, self.generator, self.device))

    def erase(self, picked: Tensor) -> None:
        """Random erasing: area and aspect drawn as the repository's, the rectangle shrunk to fit."""
        h, w = self.size
        lo, hi = self.config.erasing_area
        area = (lo + (hi - lo) * self.uniform()) * h * w
        aspect = torch.exp(math.log(self.config.erasing_aspect) * (1 - 2 * self.uniform()))
        eh = torch.sqrt(area * aspect).floor().clamp(1, h - 1)
        ew = torch.sqrt(area / aspect).floor().clamp(1, w - 1)
        painted = picked * _box(eh, ew, self.size, self.generator, self.device, centred_anywhere=False)
        value = self.uniform()[:, None, None, None]
        self.blank(painted)
        self.fill = self.fill + value * painted


def sample_mixing(n: int, size: tuple[int, int], config: MixConfig, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> Mixing | None:
    """Draw the mixture of a batch (Un-Mix's ``GM``/``RM``/``Cutout``/``RandomErasing``, batched).

    Each round picks its images independently with its probability; a global round mixes a picked
    image ``x`` into ``lam x + (1 - lam) x'``, a region round pastes a box of the partner ``x'`` (the
    partner's own, unmixed pixels), Cutout paints a square 0, erasing a rectangle one random value.

    Args:
        n: images in the batch (at least 2 for global and region mixtures).
        size: ``(H, W)`` of the stamps in pixels.
        config: the settings.
        device: where the tensors are made.
        generator: source of randomness (deterministic given its state); the global RNG when None.

    Returns:
        The :class:`Mixing`, or ``None`` when the method can mix nothing (``"none"``, zero rounds or zero
        probabilities): then nothing was drawn from ``generator``.
    """
    rounds = _rounds(config)
    if not rounds:
        return None
    draw = _MixingDraw(n, size, config, torch.device(device), generator)
    steps = {"global": draw.mix_global, "region": draw.mix_region, "cutout": draw.cutout,
             "erasing": draw.erase}
    for kind in rounds:
        picked = (draw.uniform() < _round_prob(config, kind)).float()[:, None, None, None]
        steps[kind](picked)
    return Mixing(torch.stack(draw.sources, dim=1), torch.cat(draw.coefficients, dim=1), draw.fill)


def apply_mixing(images: Tensor, mixing: Mixing) -> Tensor:
    """The mixed images ``sum_s c_s x[source_s] + fill``.

    Args:
        images: ``(N, C, H, W)`` (any units; Un-Mix mixes the network's input, as the objectives do).
        mixing: from :func:`sample_mixing` for this batch.

    Returns:
        ``(N, C, H, W)``.
    """
    c = mixing.coefficients.to(images.dtype)
    gathered = images[mixing.sources]  # (N, S, C, H, W)
    return (c[:, :, None] * gathered).sum(dim=1) + mixing.fill.to(images.dtype)


def mix_pixel_weights(weights: Tensor, mixing: Mixing) -> Tensor:
    """The reconstruction loss's pixel weights of the mixed images: each pixel takes its sources'
    weights in proportion to their coefficients (so pixel decay does not change them); painted pixels
    (Cutout, erasing) get weight 0.

    Args:
        weights: ``(N, 1 or B, H, W)`` non-negative pixel weights of the unmixed images.
        mixing: the batch's mixture.

    Returns:
        Tensor shaped as ``weights``.
    """
    c = mixing.coefficients.to(weights.dtype)
    total = c.sum(dim=1, keepdim=True)  # (N, 1, H, W)
    mixed = (c[:, :, None] * weights[mixing.sources]).sum(dim=1)
    return torch.where(total > 0, mixed / total.clamp_min(torch.finfo(weights.dtype).tiny), 0.0)


def centre_importance(size: tuple[int, int], sigma: float | None) -> Tensor:
    """Pixel importance of the soft targets: a Gaussian centred on the stamp, or uniform.

    Args:
        size: ``(H, W)`` in pixels.
        sigma: standard deviation as a fraction of the mean side; ``None``: every pixel 1.

    Returns:
        ``(H, W)`` float32, maximum 1.
    """
    h, w = size
    if sigma is None:
        return torch.ones(h, w)
    s = sigma * (h + w) / 2
    y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    return torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * s * s))


def soft_targets(mixing: Mixing, importance: Tensor) -> Tensor:
    """The soft InfoNCE targets: row ``i`` holds each batch image's share of mixed image ``i``.

    ``t_ij = sum_{s: source_s = j} sum_p pi(p) c_s(p) / sum_s sum_p pi(p) c_s(p)`` with the pixel
    importance ``pi``: the mixing weight ``lam`` of a global mixture, the (importance-weighted) pasted
    fraction of a region mixture. Painted pixels count for nobody; a row with nothing left keeps 1 on
    itself.

    Args:
        mixing: the batch's mixture.
        importance: ``(H, W)`` pixel importance (:func:`centre_importance`).

    Returns:
        ``(N, N)`` float32, non-negative, rows summing to 1.
    """
    c = mixing.coefficients.float()
    n = c.shape[0]
    share = (c * importance.to(c.device)).sum(dim=(2, 3))  # (N, S)
    targets = torch.zeros(n, n, device=c.device).scatter_add_(1, mixing.sources, share)
    total = targets.sum(dim=1, keepdim=True)
    empty = total[:, 0] <= 0
    targets[empty] = torch.eye(n, device=c.device)[empty]
    return targets / targets.sum(dim=1, keepdim=True)
