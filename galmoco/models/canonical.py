"""A canonical frame for the square's symmetry group D4: exact invariance to flips and 90-degree rotations.

Each stamp is turned into the one of its eight flips/rotations that a fixed, orientation-sensitive
score ranks highest. The eight orientations of a galaxy share the same set of eight candidates, so they
all map to the same pixels: an encoder that reads the canonical stamp gives one latent vector for all
eight, whatever its weights. The decoder draws the canonical stamp and :func:`from_canonical` turns it
back, so reconstruction loses nothing. This is canonicalisation with a fixed (not learned) function
(Kaba et al. 2023, "Equivariance with Learned Canonicalization Functions", ICML); the contrastive
objective is left to learn what the frame does not give: arbitrary angles, seeing, noise, flux.

The score is a windowed moment functional of the band-summed stamp, ``sum_p x(p) w(p)`` with
``w = exp(-r^2 / 2 s^2) (A (u^2 - v^2) + B uv) / s^2 + (C u + D v) / s)`` (``s`` = side / 8): the
quadrupole sets the major axis, the dipole the remaining half-turn. Its eight values are computed as one
float64 product with the eight transformed weight maps. Candidates that tie exactly are identical
stamps (a stamp with a symmetry), so the choice between them does not matter.
"""

from __future__ import annotations

import torch

from galmoco.data.transforms import SYMMETRIES, apply_symmetry, apply_symmetry_index

__all__ = ["INVERSE", "canonical_frame", "from_canonical", "to_canonical"]

#: index of the inverse of each element of :data:`~galmoco.data.transforms.SYMMETRIES`
#: (only the two quarter turns are not their own inverse)
INVERSE: tuple[int, ...] = tuple(SYMMETRIES.index(
    {"rot90": "rot270", "rot270": "rot90"}.get(name, name)) for name in SYMMETRIES)
#: weights of the score's quadrupole (A, B) and dipole (C, D) terms: unequal and not simple ratios,
#: so that distinct candidates do not tie
_COEFFICIENTS = (1.0, 0.618, 0.318, 0.195)

_weights_cache: dict[tuple[int, str], torch.Tensor] = {}


def _score_weights(size: int, device: torch.device) -> torch.Tensor:
    """``(size * size, 8)`` float64: column k is ``w`` moved so that ``x . column_k`` scores candidate k."""
    key = (size, str(device))
    if key not in _weights_cache:
        s = size / 8
        u = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        yy, xx = torch.meshgrid(u, u, indexing="ij")  # rows, columns
        a, b, c, d = _COEFFICIENTS
        window = torch.exp(-(xx**2 + yy**2) / (2 * s * s))
        w = window * ((a * (xx**2 - yy**2) + b * xx * yy) / s**2 + (c * xx + d * yy) / s)
        # score of candidate k = sum_p (S_k x)(p) w(p) = sum_q x(q) (S_k^-1 w)(q)
        moved = torch.stack([apply_symmetry(w, SYMMETRIES[INVERSE[k]]) for k in range(len(SYMMETRIES))])
        _weights_cache[key] = moved.reshape(len(SYMMETRIES), -1).T.contiguous().to(device)
    return _weights_cache[key]


def canonical_frame(images: torch.Tensor) -> torch.Tensor:
    """The element of D4 that takes each stamp to its canonical frame.

    Args:
        images: ``(N, B, H, W)`` normalised stamps, square.

    Returns:
        ``(N,)`` int64 indices into :data:`~galmoco.data.transforms.SYMMETRIES`.
    """
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"a canonical frame needs square stamps, got {h}x{w}")
    with torch.autocast(images.device.type, enabled=False):  # the scores stay float64 under --amp
        summed = images.detach().to(torch.float64).sum(dim=1).reshape(n, h * w)
        return (summed @ _score_weights(h, images.device)).argmax(dim=1)


def to_canonical(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamps turned into their canonical frame, and the element applied (see :func:`canonical_frame`).

    Returns:
        ``(canonical (N, B, H, W), frame (N,))``; ``from_canonical(canonical, frame)`` gives ``images``.
    """
    frame = canonical_frame(images)
    return apply_symmetry_index(images, frame), frame


def from_canonical(images: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Undo :func:`to_canonical`: apply the inverse of ``frame[n]`` to ``images[n]`` (``(N, C, H, W)``)."""
    inverse = torch.as_tensor(INVERSE, device=frame.device)[frame]
    return apply_symmetry_index(images, inverse)
