"""The eight symmetries of a square stamp (the dihedral group D4), batched on tensors.

Names follow the original DES MoCo-autoencoder study for the flips: ``flip1`` is the reflection
about the x axis (rows reversed), ``flip2`` about the y axis (columns reversed), ``flip3`` both
(= a 180 degree rotation). The others are ``rot90`` and ``rot270`` (counter-clockwise, as
``torch.rot90``) and the two diagonal reflections ``transpose`` and ``antitranspose``.
"""

from __future__ import annotations

import torch

__all__ = ["SYMMETRIES", "TRANSFORMS", "apply_symmetry", "apply_symmetry_index"]

#: all eight elements, identity first; the index is what ``apply_symmetry_index`` takes
SYMMETRIES: tuple[str, ...] = (
    "identity", "flip1", "flip2", "flip3", "rot90", "rot270", "transpose", "antitranspose",
)
#: the seven non-identity elements: the transforms of similarity placement
TRANSFORMS: tuple[str, ...] = SYMMETRIES[1:]


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


def apply_symmetry_index(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apply a different symmetry to each stamp: ``index[n]`` (0..7, see :data:`SYMMETRIES`) to ``images[n]``.

    Args:
        images: ``(N, C, H, W)``.
        index: ``(N,)`` integer tensor on any device.

    Returns:
        ``(N, C, H, W)``; one group gather per distinct element, no Python loop over stamps.
    """
    out = torch.empty_like(images)
    index = index.to(images.device)
    for k, name in enumerate(SYMMETRIES):
        sel = (index == k).nonzero(as_tuple=True)[0]
        if sel.numel():
            out[sel] = apply_symmetry(images[sel], name)
    return out
