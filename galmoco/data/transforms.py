"""The eight symmetries of a square stamp (the dihedral group D4), and a 45-degree turn, batched on tensors.

Names follow the original DES MoCo-autoencoder study for the flips: ``flip1`` is the reflection
about the x axis (rows reversed), ``flip2`` about the y axis (columns reversed), ``flip3`` both
(= a 180 degree rotation). The others are ``rot90`` and ``rot270`` (counter-clockwise, as
``torch.rot90``) and the two diagonal reflections ``transpose`` and ``antitranspose``.

``rot45`` (counter-clockwise, bilinear, reflection padding) lies outside the group: it moves pixels
between grid positions, so no exact frame absorbs it, and its similarity placement measures the
rotation invariance a model has learned (:data:`PLACEMENT_TRANSFORMS`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["PLACEMENT_TRANSFORMS", "ROTATIONS", "SYMMETRIES", "TRANSFORMS", "apply_symmetry",
           "apply_symmetry_index", "apply_transform", "rotate"]

#: all eight elements, identity first; the index is what ``apply_symmetry_index`` takes
SYMMETRIES: tuple[str, ...] = (
    "identity", "flip1", "flip2", "flip3", "rot90", "rot270", "transpose", "antitranspose",
)
#: the seven non-identity elements: the transforms of similarity placement
TRANSFORMS: tuple[str, ...] = SYMMETRIES[1:]
#: turns outside the group, name -> counter-clockwise angle in degrees
ROTATIONS: dict[str, float] = {"rot45": 45.0}
#: what ``galmoco embed --transforms`` embeds and similarity placement ranks
PLACEMENT_TRANSFORMS: tuple[str, ...] = TRANSFORMS + tuple(ROTATIONS)


def apply_symmetry(images: torch.Tensor, name: str) -> torch.Tensor:
    """Apply one named symmetry to every stamp of a batch.

    Args:
        images: ``(..., H, W)`` with ``H == W``.
        name: one of :data:`SYMMETRIES`.

    Returns:
        A new tensor of the same shape.
    """
    h, w = -2, -1
    if name == "identity":
        return images.clone()
    if name == "flip1":
        return images.flip(h)
    if name == "flip2":
        return images.flip(w)
    if name == "flip3":
        return images.flip(h, w)
    if name == "rot90":
        return torch.rot90(images, 1, (h, w))
    if name == "rot270":
        return torch.rot90(images, -1, (h, w))
    if name == "transpose":
        return images.transpose(h, w).contiguous()
    if name == "antitranspose":
        return images.flip(h, w).transpose(h, w).contiguous()
    raise ValueError(f"unknown symmetry {name!r}; expected one of {', '.join(SYMMETRIES)}")


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn every stamp about its centre by ``degrees`` in the sense of ``rot90`` (``rotate(x, 90)`` is
    ``rot90``): bilinear, reflection padding (as the augmentation's arbitrary rotation).

    Args:
        images: ``(N, C, H, W)``, float.
        degrees: the angle.

    Returns:
        A new ``(N, C, H, W)`` tensor.
    """
    a = math.radians(degrees)
    # output (x, y) reads input R (x, y), in grid_sample's normalised coordinates (x along columns)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=images.dtype, device=images.device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_transform(images: torch.Tensor, name: str) -> torch.Tensor:
    """Apply one of :data:`PLACEMENT_TRANSFORMS` (or ``identity``) to every stamp of ``(N, C, H, W)``."""
    if name in ROTATIONS:
        return rotate(images, ROTATIONS[name])
    return apply_symmetry(images, name)


_tables: dict[tuple[int, str], torch.Tensor] = {}


def _source_pixels(size: int, device: torch.device) -> torch.Tensor:
    """``(8, size * size)`` int64: for each element, the flat input pixel of every output pixel."""
    key = (size, str(device))
    if key not in _tables:
        flat = torch.arange(size * size).reshape(size, size)
        _tables[key] = torch.stack([apply_symmetry(flat, name).reshape(-1) for name in SYMMETRIES]).to(device)
    return _tables[key]


def apply_symmetry_index(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apply a different symmetry to each stamp: ``index[n]`` (0..7, see :data:`SYMMETRIES`) to ``images[n]``.

    Args:
        images: ``(N, C, H, W)``, square.
        index: ``(N,)`` integer tensor on any device.

    Returns:
        ``(N, C, H, W)``, a new tensor: one gather of every stamp's pixels, no loop over stamps.
    """
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"symmetries of the square need square stamps, got {h}x{w}")
    source = _source_pixels(w, images.device)[index.to(images.device)]  # (N, H*W)
    return images.reshape(n, c, h * w).gather(2, source[:, None].expand(n, c, h * w)).reshape(n, c, h, w)
