"""The transforms of similarity placement, batched on tensors: the eight symmetries of a square stamp
(the dihedral group D4) and rotations by any angle.

Names follow the original DES MoCo-autoencoder study for the flips: ``flip1`` is the reflection
about the x axis (rows reversed), ``flip2`` about the y axis (columns reversed), ``flip3`` both
(= a 180 degree rotation). The others are ``rot90`` and ``rot270`` (counter-clockwise, as
``torch.rot90``) and the two diagonal reflections ``transpose`` and ``antitranspose``.

Rotations by other angles (``rot15``, ``rot30``, ... and ``rotrand``, a seeded uniform angle per
galaxy) lie outside the group: they move pixels between grid positions, so no exact frame absorbs
them, and their placement measures the rotation invariance a model has learned. They are made by
:func:`rotate`: the nearest quarter turn exactly, then the remaining angle (at most 45 degrees) by
three Fourier shears (Unser, Thevenaz & Yaroslavsky 1995, IEEE Trans. Image Process. 4, 1371;
Larkin, Oldfield & Klemm 1997, Opt. Commun. 139, 99). Each shear is a sub-pixel shift of every line,
a unitary operation: total flux is conserved exactly and white sky noise keeps its variance (bilinear
interpolation would smooth it, a difference a network can spot). The stamp is embedded in sky before
turning, Gaussian noise at its own per-band sky level (median and MAD of its border), so the corners
that turn in look like sky, never zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from galmoco.errors import GalmocoError

__all__ = [
    "DEFAULT_ANGLES", "PLACEMENT_TRANSFORMS", "RANDOM_ROTATION", "SYMMETRIES", "TRANSFORMS", "apply_symmetry",
    "apply_symmetry_index", "apply_transform", "border_sky", "galaxy_seeds", "parse_angles",
    "placement_transforms", "random_angles", "rotate", "rotation_angle", "rotation_name",
]

#: all eight elements, identity first; the index is what ``apply_symmetry_index`` takes
SYMMETRIES: tuple[str, ...] = (
    "identity", "flip1", "flip2", "flip3", "rot90", "rot270", "transpose", "antitranspose",
)
#: the seven non-identity elements: the D4 transforms of similarity placement
TRANSFORMS: tuple[str, ...] = SYMMETRIES[1:]
#: the arbitrary angles ``galmoco embed --transforms`` turns the stamps by (degrees, counter-clockwise)
DEFAULT_ANGLES: tuple[float, ...] = (15.0, 30.0, 45.0, 60.0, 75.0)
#: a seeded uniform angle in [0, 360) per galaxy (the angle is written to the table as ``angle_rotrand``)
RANDOM_ROTATION = "rotrand"
#: sky-noise border of a stamp (pixels) for :func:`border_sky`
BORDER = 4
#: applied before the Fourier shears: identity, rot90, rot180 (= flip3), rot270 as SYMMETRIES indices
_QUARTER_TURNS = torch.tensor([0, 4, 3, 5])


def rotation_name(degrees: float) -> str:
    """``rot<angle>`` (``rot15``, ``rot22p5``): column-name safe."""
    return "rot" + f"{degrees:g}".replace(".", "p").replace("-", "m")


def placement_transforms(angles: Sequence[float] = DEFAULT_ANGLES, random: bool = True) -> tuple[str, ...]:
    """The seven D4 transforms, ``rot<angle>`` for each angle, then ``rotrand`` when ``random``."""
    turns = tuple(rotation_name(a) for a in angles)
    extra = (RANDOM_ROTATION,) if random else ()
    return TRANSFORMS + tuple(t for t in turns if t not in TRANSFORMS) + extra


#: what ``galmoco embed --transforms`` embeds by default and similarity placement ranks
PLACEMENT_TRANSFORMS: tuple[str, ...] = placement_transforms()


def parse_angles(text: str) -> tuple[tuple[float, ...], bool]:
    """``"15,30,rand"`` -> ``((15.0, 30.0), True)``: the ``--angles`` option (degrees; ``rand``: rotrand)."""
    angles, random = [], False
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if token == "rand":
            random = True
            continue
        try:
            value = float(token)
        except ValueError:
            raise GalmocoError(f"--angles: {token!r} is neither an angle in degrees nor 'rand'") from None
        if not math.isfinite(value):
            raise GalmocoError(f"--angles: {token!r} is not a finite angle")
        angles.append(value)
    return tuple(dict.fromkeys(angles)), random


def rotation_angle(name: str) -> float | None:
    """The angle (degrees) of a ``rot<angle>`` transform name; None for D4 elements and ``rotrand``."""
    if name in SYMMETRIES or name == RANDOM_ROTATION or not name.startswith("rot"):
        return None
    try:
        return float(name[3:].replace("p", ".").replace("m", "-"))
    except ValueError:
        return None


def galaxy_seeds(seed: int, rows: np.ndarray) -> np.ndarray:
    """One 63-bit seed per galaxy from a run seed and its catalogue row (splitmix64 of both), so a galaxy's
    noise and random angle do not depend on the batch it is processed in.

    Args:
        seed: the run's seed.
        rows: ``(N,)`` non-negative integers (catalogue rows).

    Returns:
        ``(N,)`` int64.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(rows, np.uint64) + np.uint64(seed & (2**64 - 1)) * np.uint64(0x9E3779B97F4A7C15)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(mult)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(1)).astype(np.int64)


def random_angles(seeds: np.ndarray) -> torch.Tensor:
    """``(N,)`` float64 angles uniform in [0, 360) degrees, one per galaxy seed (see :func:`galaxy_seeds`)."""
    return torch.from_numpy(np.array([np.random.default_rng([int(s), 1]).uniform(0, 360) for s in seeds]))


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


def border_sky(images: torch.Tensor, border: int = BORDER) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-stamp, per-band sky level and noise from the stamp's border (where galaxies rarely reach).

    Args:
        images: ``(N, C, H, W)``.
        border: width of the border in pixels.

    Returns:
        ``(median, sigma)``, each ``(N, C)``: the border's median and its robust Gaussian sigma,
        1.4826 x the median absolute deviation (same units as ``images``).
    """
    n, c, h, w = images.shape
    b = max(1, min(border, h // 2, w // 2))
    edge = torch.cat([images[..., :b, :].reshape(n, c, -1), images[..., h - b :, :].reshape(n, c, -1),
                      images[..., b : h - b, :b].reshape(n, c, -1),
                      images[..., b : h - b, w - b :].reshape(n, c, -1)], dim=2)
    median = edge.median(dim=2).values
    sigma = 1.4826 * (edge - median[..., None]).abs().median(dim=2).values
    return median, sigma


def _shift_lines(f: torch.Tensor, shifts: torch.Tensor, dim: int) -> torch.Tensor:
    """``g[..., j] = f[..., j + shifts[...]]`` along ``dim`` (periodic, band-limited: a Fourier phase ramp).

    Args:
        f: ``(M, C, P, P)`` real, ``P`` odd (no Nyquist term, so the shift is exactly unitary).
        shifts: ``(M, P)`` pixels, one per line across ``dim`` (broadcast over channels).
        dim: -1 shifts each row along x, -2 each column along y.
    """
    p = f.shape[dim]
    k = torch.arange(p // 2 + 1, dtype=torch.float64, device=f.device)
    ramp = torch.polar(torch.ones((), dtype=torch.float64, device=f.device),
                       2 * math.pi * shifts[..., None] * k / p).to(torch.complex64)  # (M, P, K)
    if dim == -1:  # rows y: the shift varies with the row
        return torch.fft.irfft(torch.fft.rfft(f, dim=-1) * ramp[:, None], n=p, dim=-1)
    return torch.fft.irfft(torch.fft.rfft(f, dim=-2) * ramp[:, None].transpose(-1, -2), n=p, dim=-2)


def _shear_rotate(images: torch.Tensor, radians: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Turn square stamps by ``radians`` (each at most pi/4 in size) by three Fourier shears.

    The output at pixel ``p`` (centre-relative) reads the input at ``M p``, ``M = [[c, -s], [s, c]]``,
    written as ``A(a) B(b) A(a)`` with x-shear ``a = -tan(t/2)`` and y-shear ``b = sin t``.

    Args:
        images: ``(M, C, H, H)`` float32.
        radians: ``(M,)`` float64 angles.
        noise: ``(M, C, P, P)`` unit Gaussian noise, ``P`` from :func:`_padded_size`: the sky around it.
    """
    m, c, h, _ = images.shape
    p, lo = _padded_size(h)
    median, sigma = border_sky(images)
    frame = median[..., None, None] + sigma[..., None, None] * noise
    frame[..., lo : lo + h, lo : lo + h] = images
    centre = lo + (h - 1) / 2
    offsets = torch.arange(p, dtype=torch.float64, device=images.device) - centre  # (P,)
    a = (-torch.tan(radians / 2))[:, None] * offsets  # (M, P) shift of each row / column
    b = torch.sin(radians)[:, None] * offsets
    frame = _shift_lines(frame, a, -1)
    frame = _shift_lines(frame, b, -2)
    frame = _shift_lines(frame, a, -1)
    return frame[..., lo : lo + h, lo : lo + h].contiguous()


def _padded_size(h: int) -> tuple[int, int]:
    """``(P, lo)``: the odd side of the periodic sky frame and where the stamp starts in it.

    For turns up to 45 degrees the pixels the crop needs are read, in the three passes, up to
    ``(1 + 3 tan(22.5 deg)) H / 2 = 1.12 H``, ``H`` and ``0.71 H`` from the centre. Reads beyond the frame
    wrap around; a frame of ``1.7 H`` makes every wrapped read land in the sky around the stamp (never on
    its own pixels), so wrapping only brings in more sky noise.
    """
    lo = math.ceil(0.35 * h) + 2
    p = h + 2 * lo
    return p + (1 - p % 2), lo


def rotate(
    images: torch.Tensor,
    degrees: float | torch.Tensor,
    seeds: np.ndarray | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turn every stamp about its centre by ``degrees`` in the sense of ``rot90`` (``rotate(x, 90)`` is
    ``rot90`` exactly), conserving flux and filling the corners with sky noise.

    Multiples of 90 degrees are exact pixel permutations. Other angles: the nearest quarter turn, then
    three Fourier shears in a periodic frame of sky (module docstring). Speed (2 CPU cores, float32):
    about 60 ms for 256 stamps of 4 x 64 x 64 (benchmarks/bench_rotate.py), a few ms on a GPU.

    Args:
        images: ``(N, C, H, H)`` float (square stamps).
        degrees: one angle for all, or ``(N,)`` angles, counter-clockwise.
        seeds: optional ``(N,)`` per-galaxy seeds of the sky noise (:func:`galaxy_seeds`): a stamp's
            output then depends only on it and its seed.
        generator: otherwise the sky noise of the whole batch comes from this generator (training
            augmentation), or torch's global one when None.

    Returns:
        A new ``(N, C, H, H)`` tensor of the input's dtype.
    """
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"rotations of the square need square stamps, got {h}x{w}")
    deg = torch.as_tensor(degrees, dtype=torch.float64).reshape(-1).expand(n).cpu()
    quarters = torch.round(deg / 90.0)
    residual = torch.deg2rad(deg - 90.0 * quarters)
    out = apply_symmetry_index(images, _QUARTER_TURNS[quarters.long() % 4])
    turn = (residual != 0).nonzero().squeeze(1)
    if turn.numel() == 0:
        return out
    p, _ = _padded_size(h)
    if seeds is not None:
        chosen = np.asarray(seeds, np.int64)[turn.numpy()]
        noise = torch.stack([torch.randn((c, p, p), generator=torch.Generator().manual_seed(int(s)))
                             for s in chosen]).to(images.device)
    else:
        noise = torch.randn((turn.numel(), c, p, p), generator=generator,
                            device=generator.device if generator is not None else images.device)
    index = turn.to(images.device)
    turned = _shear_rotate(out[index].float(), residual[turn].to(images.device), noise.float())
    out[index] = turned.to(out.dtype)
    return out


def apply_transform(images: torch.Tensor, name: str, seeds: np.ndarray | None = None,
                    angles: torch.Tensor | None = None) -> torch.Tensor:
    """Apply one placement transform (a D4 element, ``rot<angle>`` or ``rotrand``) to ``(N, C, H, W)``.

    Args:
        images: the stamps.
        name: the transform.
        seeds: per-galaxy sky-noise seeds for the rotations (see :func:`rotate`).
        angles: ``(N,)`` degrees for ``rotrand`` (default :func:`random_angles` of ``seeds``).
    """
    if name in SYMMETRIES:
        return apply_symmetry(images, name)
    if name == RANDOM_ROTATION:
        if angles is None:
            if seeds is None:
                raise ValueError("rotrand needs per-galaxy seeds or angles")
            angles = random_angles(seeds)
        return rotate(images, angles, seeds)
    angle = rotation_angle(name)
    if angle is None:
        raise ValueError(f"unknown transform {name!r}; expected a D4 element, rot<degrees> or rotrand")
    return rotate(images, angle, seeds)


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
