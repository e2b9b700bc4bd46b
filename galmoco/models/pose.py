"""A continuous canonical frame (the group O(2) plus translation): invariance to rotation at any angle.

Each normalised stamp is resampled into its *pose frame*: centred on its adaptive centroid, its major
axis along the columns, and flipped along each axis so that its windowed third moments (skewness) along
both axes are positive. A copy of a galaxy turned by any angle, flipped or shifted has the same
moments, turned alike, so it reaches the encoder as (up to interpolation and noise) the same pixels;
the decoder draws in the pose frame and :func:`from_pose_frame` turns the drawing back, so
reconstruction keeps the orientation. This is canonicalisation with a fixed function (Kaba et al.
2023, ICML), continuous where :mod:`galmoco.models.canonical` is the discrete D4 case.

The moments are adaptive (Bernstein & Jarvis 2002; Hirata & Seljak 2003, "HSM"): a Gaussian window is
matched iteratively to the object's own second moments, which keeps the noise of the sky out of the
estimate of faint, small galaxies. Position angle ``theta = 0.5 atan2(2 Mxy, Mxx - Myy)``. The encoder
sees the inscribed disc of the resampled stamp (the corners, which a rotation brings in from outside
the stamp, are set to the sky level 0 for every stamp alike, so no copy can be told by them).

Compact objects (:func:`compact_scale`, :func:`scale_pose_frame`): the frame may also magnify an object
smaller than a given size to that size, and the drawing is shrunk back. A star is its PSF, so under a
wider or sharper seeing it then reaches the encoder as nearly the same pixels.

Limits: the angle of a nearly round object and the flips of a nearly symmetric one are set by noise;
their copies then differ by a rotation or flip the encoder has to absorb (the training augmentations
keep arbitrary rotations and the D4 flips for this reason). The encoder's input is resampled bilinearly
(cheap; it smooths the noise by an amount that depends on the sub-pixel phase), the drawing turned back
bicubically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ADAPTIVE_ITERATIONS", "compact_scale", "from_pose_frame", "pose_frame", "scale_pose_frame",
           "to_pose_frame"]

#: fixed-point iterations of the adaptive window (a fixed count keeps batches free of data-dependent loops)
ADAPTIVE_ITERATIONS = 4
#: starting window sigma in pixels, and its bounds (a fraction of the side keeps it inside the stamp)
_START_SIGMA = 3.0
_MIN_SIGMA = 1.0
_MAX_SIGMA_PER_SIDE = 1 / 6
#: the centroid may move at most this fraction of the side from the stamp centre
_MAX_OFFSET_PER_SIDE = 1 / 8
#: :func:`compact_scale`: the window's sigma in units of the target size, and the largest magnification
_SIZE_WINDOW = 1.4
_MAX_MAGNIFICATION = 1.6


_basis_cache: dict[tuple[int, str], torch.Tensor] = {}


def _monomials(size: int, device: torch.device) -> torch.Tensor:
    """``(size * size, 10)`` float64: the monomials ``1, x, y, x^2, xy, y^2, x^3, x^2 y, x y^2, y^3`` of
    every pixel, x along columns and y along rows, in pixels from the stamp centre."""
    key = (size, str(device))
    if key not in _basis_cache:
        u = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        x, y = (t.reshape(-1) for t in torch.meshgrid(u, u, indexing="ij")[::-1])
        _basis_cache[key] = torch.stack((torch.ones_like(x), x, y, x * x, x * y, y * y,
                                         x**3, x * x * y, x * y * y, y**3), 1).to(device)
    return _basis_cache[key]


def pose_frame(images: torch.Tensor, iterations: int = ADAPTIVE_ITERATIONS) -> torch.Tensor:
    """The affine map from each stamp's pose frame to the stamp, in ``grid_sample`` coordinates.

    Each iteration is two matrix products with the pixels' monomials (the window's exponent is a
    quadratic form in them, and the window's moments are sums over them), so its cost is that of
    reading the stamps twice.

    Args:
        images: ``(N, B, H, W)`` normalised stamps, square (bands are summed).
        iterations: adaptive-window iterations.

    Returns:
        ``(N, 2, 3)`` float32: ``[A | t]`` with ``A`` orthogonal (rotation times axis flips) and ``t``
        the centroid, in the normalised coordinates of ``F.affine_grid`` (``align_corners=False``).
    """
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"a pose frame needs square stamps, got {h}x{w}")
    basis = _monomials(w, images.device)
    quadratic = basis[:, :6].to(torch.float32).T.contiguous()  # (6, P)
    max_var, max_offset = (w * _MAX_SIGMA_PER_SIDE) ** 2, w * _MAX_OFFSET_PER_SIDE
    with torch.autocast(images.device.type, enabled=False):
        flux = images.detach().to(torch.float32).sum(dim=1).reshape(n, h * w)
        zero = torch.zeros(n, 1, dtype=torch.float64, device=images.device)
        cx, cy, angle = zero, zero, zero
        # window inverse covariance [[a, b], [b, c]]; starts round
        a, b, c = zero + 1 / _START_SIGMA**2, zero, zero + 1 / _START_SIGMA**2
        for _ in range(iterations):
            # exponent -(a dx^2 + 2 b dx dy + c dy^2) / 2 with dx = x - cx, dy = y - cy, in monomials
            ex, ey = a * cx + b * cy, b * cx + c * cy
            exponent = torch.cat((-0.5 * (a * cx * cx + 2 * b * cx * cy + c * cy * cy), ex, ey,
                                  -0.5 * a, -b, -0.5 * c), 1)
            weight = flux * torch.exp(exponent.to(torch.float32) @ quadratic)
            m = (weight @ quadratic.T).to(torch.float64)  # (N, 6) raw windowed moments
            ok = m[:, :1] > 0  # a stamp with no windowed flux keeps its last window
            m = m / torch.where(ok, m[:, :1], torch.ones_like(zero))
            mx, my = m[:, 1:2], m[:, 2:3]
            mxx, mxy, myy = m[:, 3:4] - mx * mx, m[:, 4:5] - mx * my, m[:, 5:6] - my * my
            # matched Gaussian window: covariance 2 M (exact for a Gaussian object), eigenvalues clamped
            phi = 0.5 * torch.atan2(2 * mxy, mxx - myy)
            half_tr, radius = (mxx + myy) / 2, torch.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
            l1 = (2 * (half_tr + radius)).clamp(_MIN_SIGMA**2, max_var)
            l2 = (2 * (half_tr - radius)).clamp(_MIN_SIGMA**2, max_var)
            co, si = torch.cos(phi), torch.sin(phi)
            good = ok & torch.isfinite(l1) & torch.isfinite(l2) & torch.isfinite(phi)
            a = torch.where(good, co * co / l1 + si * si / l2, a)
            b = torch.where(good, co * si * (1 / l1 - 1 / l2), b)
            c = torch.where(good, si * si / l1 + co * co / l2, c)
            angle = torch.where(good, phi, angle)
            cx = torch.where(good, mx.clamp(-max_offset, max_offset), cx)
            cy = torch.where(good, my.clamp(-max_offset, max_offset), cy)
        # the signs of the windowed third moments (skewness) along the major (p) and minor (q) axes, about
        # the centroid, fix the two axis flips
        cos, sin = torch.cos(angle), torch.sin(angle)
        m = weight.to(torch.float64) @ basis  # (N, 10), the last window's moments up to third order
        m = m / torch.where(m[:, :1] > 0, m[:, :1], torch.ones_like(zero))
        mx, my = m[:, 1:2], m[:, 2:3]
        sxxx = m[:, 6:7] - 3 * mx * m[:, 3:4] + 2 * mx**3
        sxxy = m[:, 7:8] - my * m[:, 3:4] - 2 * mx * m[:, 4:5] + 2 * mx * mx * my
        sxyy = m[:, 8:9] - mx * m[:, 5:6] - 2 * my * m[:, 4:5] + 2 * mx * my * my
        syyy = m[:, 9:10] - 3 * my * m[:, 5:6] + 2 * my**3
        skew_p = cos**3 * sxxx + 3 * cos * cos * sin * sxxy + 3 * cos * sin * sin * sxyy + sin**3 * syyy
        skew_q = -(sin**3) * sxxx + 3 * sin * sin * cos * sxxy - 3 * sin * cos * cos * sxyy + cos**3 * syyy
        sign_p = torch.where(skew_p < 0, -1.0, 1.0)
        sign_q = torch.where(skew_q < 0, -1.0, 1.0)
        # stamp offset d = R(angle) diag(sign_p, sign_q) (frame offset) + centre; pixels -> 2 / w units
        linear = torch.stack((torch.cat((cos * sign_p, -sin * sign_q), 1),
                              torch.cat((sin * sign_p, cos * sign_q), 1)), 1)  # (N, 2, 2)
        centre = torch.cat((cx, cy), 1)
        return torch.cat((linear, (2 / w) * centre[:, :, None]), 2).to(torch.float32)


def compact_scale(flux: torch.Tensor, affine: torch.Tensor, size: float) -> torch.Tensor:
    """How much each stamp's pose frame shrinks so that a compact object reaches the encoder at ``size``.

    An object's size here is its windowed RMS radius per axis, ``sqrt(M_rr / 2)``, about the pose frame's
    centroid, under a fixed Gaussian window of ``1.4 size``. Objects smaller than ``size`` (stars, and
    compact galaxies, whose size is mostly the PSF's) are magnified to it, by at most 1.6; larger ones
    are left as they are. A star under a wider or sharper seeing then reaches the encoder as nearly the
    same pixels: a Moffat profile of fixed beta only changes scale with the seeing.

    Args:
        flux: ``(N, H, W)`` raw flux, summed over bands.
        affine: ``(N, 2, 3)`` their :func:`pose_frame`.
        size: the size in pixels, in the windowed units above (about 1.2 times a star's at the survey's
            median seeing).

    Returns:
        ``(N,)`` float32 factors in ``[1 / 1.6, 1]`` for :func:`scale_pose_frame`.
    """
    w = flux.shape[-1]
    u = torch.arange(w, dtype=torch.float32, device=flux.device) - (w - 1) / 2
    centre = affine[:, :, 2].to(torch.float32) * (w / 2)  # (x, y) in pixels from the stamp centre
    # the Gaussian window is separable: sums over rows and columns of per-axis weights, O(N H W) once
    dx2 = (u[None, :] - centre[:, 0, None]) ** 2
    dy2 = (u[None, :] - centre[:, 1, None]) ** 2
    wx = torch.exp(-dx2 / (2 * (_SIZE_WINDOW * size) ** 2))
    wy = torch.exp(-dy2 / (2 * (_SIZE_WINDOW * size) ** 2))
    flux = flux.detach().to(torch.float32)
    rows = torch.einsum("nyx,nx->ny", flux, wx)
    rows_xx = torch.einsum("nyx,nx->ny", flux, wx * dx2)
    total = (rows * wy).sum(dim=1)
    m_rr = ((rows * dy2 + rows_xx) * wy).sum(dim=1) / total.clamp_min(1e-12)
    radius = torch.sqrt(m_rr.clamp_min(0) / 2)
    return (radius / size).clamp(1 / _MAX_MAGNIFICATION, 1.0)


def scale_pose_frame(affine: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The pose frames ``affine`` ``(N, 2, 3)`` with their linear part times ``scale`` ``(N,)``: below 1,
    the encoder sees the object magnified by ``1 / scale`` (:func:`compact_scale`)."""
    return torch.cat((affine[:, :, :2] * scale.to(affine.dtype)[:, None, None], affine[:, :, 2:]), 2)


def _disc(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(size, size)`` 1 inside the stamp's inscribed circle, 0 outside."""
    u = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    return ((u[None, :] ** 2 + u[:, None] ** 2) <= (size / 2) ** 2).to(dtype)


def to_pose_frame(images: torch.Tensor,
                  affine: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamps resampled into their pose frame (bilinear), corners outside the inscribed disc set to 0.

    Args:
        images: ``(N, C, H, W)`` normalised stamps.
        affine: from :func:`pose_frame` (computed from ``images`` when None).

    Returns:
        ``(framed (N, C, H, W), affine (N, 2, 3))``.
    """
    affine = pose_frame(images) if affine is None else affine
    grid = F.affine_grid(affine.to(images.dtype), list(images.shape), align_corners=False)
    framed = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return framed * _disc(images.shape[-1], images.device, images.dtype), affine


def from_pose_frame(images: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Undo :func:`to_pose_frame`: turn drawings made in the pose frame back to the stamps' own frame.

    Args:
        images: ``(N, C, H, W)`` drawn in the pose frame.
        affine: the stamps' :func:`pose_frame` (or :func:`scale_pose_frame`).

    Returns:
        ``(N, C, H, W)``, bicubic; pixels that map outside the drawing read its edge (``border`` padding).
    """
    linear, offset = affine[:, :, :2], affine[:, :, 2:]
    # A = s R with R orthogonal: A^-1 = A^T / s^2, and s^2 = |det A|
    det = (linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]).abs()[:, None, None]
    inverse_linear = linear.transpose(1, 2) / det
    inverse = torch.cat((inverse_linear, -inverse_linear @ offset), 2)
    grid = F.affine_grid(inverse.to(images.dtype), list(images.shape), align_corners=False)
    # bicubic: the drawing is smooth, and two bilinear resamplings (in and back) would blur a small galaxy
    # by up to 10 % of its norm (tests/models/test_pose.py), bicubic by about 3 %
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)

