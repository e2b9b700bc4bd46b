"""The continuous pose frame: near invariance to any angle, flips and shifts; equivariant decoding."""

from __future__ import annotations

import math

import numpy as np
import torch

from galmoco.analysis.placement import placement_ranks
from galmoco.config import TrainConfig
from galmoco.models.canonical import to_canonical
from galmoco.models.galaxy import GalaxyModel
from galmoco.models.pose import compact_scale, from_pose_frame, pose_frame, scale_pose_frame, to_pose_frame


def _render(angle: np.ndarray, flip: np.ndarray, shift: np.ndarray, shape: np.ndarray,
            size: int = 32) -> torch.Tensor:
    """Asymmetric galaxies (an elliptical body plus an off-axis clump), sampled exactly at each pose.

    Args:
        angle: ``(N,)`` position angles in radians; flip: ``(N,)`` bool mirror; shift: ``(N, 2)`` pixels;
        shape: ``(N, 3)``: major-axis sigma, axis ratio, clump offset along the major axis (pixels).
    """
    u = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))[:, None, None]  # noqa: E731
    dx, dy = xx - t(shift[:, 0]), yy - t(shift[:, 1])
    dy = torch.where(t(flip) > 0, -dy, dy)
    c, s = torch.cos(t(angle)), torch.sin(t(angle))
    p, q = c * dx + s * dy, -s * dx + c * dy
    sigma, ratio, clump = t(shape[:, 0]), t(shape[:, 1]), t(shape[:, 2])
    body = torch.exp(-0.5 * ((p / sigma) ** 2 + (q / (ratio * sigma)) ** 2))
    knot = 0.6 * torch.exp(-0.5 * (((p - clump) ** 2 + (q - 0.4 * clump) ** 2) / 1.2**2))
    image = body + knot
    return torch.stack([image, 0.6 * image], 1).float()


def _shapes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(2.5, 4.5, n), rng.uniform(0.35, 0.7, n), rng.uniform(2.0, 4.0, n)], 1)


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def test_any_angle_flip_and_shift_reach_the_same_pixels():
    n = 24
    rng = np.random.default_rng(1)
    shape = _shapes(n)
    zero = np.zeros(n)
    reference = _render(zero, zero, np.zeros((n, 2)), shape)
    moved = _render(rng.uniform(0, 2 * math.pi, n), rng.random(n) < 0.5, rng.uniform(-1.5, 1.5, (n, 2)),
                    shape)
    framed, affine = to_pose_frame(moved)
    error = _relative(framed, to_pose_frame(reference)[0])
    assert float(error.max()) < 0.05, error  # bilinear interpolation of a smooth profile: a few percent
    # the discrete D4 frame cannot absorb arbitrary angles: the same copies stay far apart there
    assert float(_relative(to_canonical(moved)[0], to_canonical(reference)[0]).median()) > 0.2
    linear = affine[:, :, :2]
    assert torch.allclose(linear @ linear.transpose(1, 2), torch.eye(2).expand(n, 2, 2), atol=1e-5)


def test_quarter_turn_gives_the_turned_frame_exactly():
    x = _render(np.full(6, 0.3), np.zeros(6), np.zeros((6, 2)), _shapes(6, seed=2))
    turned = torch.rot90(x, 1, (-2, -1))
    assert torch.allclose(to_pose_frame(turned)[0], to_pose_frame(x)[0], atol=2e-4)


def test_round_trip_inside_the_disc():
    x = _render(np.full(4, 1.1), np.ones(4), np.full((4, 2), 0.7), _shapes(4, seed=3))
    framed, affine = to_pose_frame(x)
    back = from_pose_frame(framed, affine)
    assert float(_relative(back, x).max()) < 0.08  # bilinear in, bicubic back (bilinear back: 0.12)


def test_noise_and_empty_stamps_give_finite_frames():
    g = torch.Generator().manual_seed(0)
    stamps = torch.cat([torch.zeros(2, 2, 32, 32), torch.randn(6, 2, 32, 32, generator=g),
                        -torch.ones(1, 2, 32, 32)])
    affine = pose_frame(stamps)
    assert torch.isfinite(affine).all()
    assert torch.isfinite(to_pose_frame(stamps)[0]).all()


def _model(frame: str, draw_frame: str | None = None) -> GalaxyModel:
    config = TrainConfig(objective="ae")
    config.model.frame, config.model.draw_frame = frame, draw_frame
    config.model.widths = (8, 16)
    config.model.latent_dim = 32
    config.model.photometry = False  # aperture fluxes ignore turns in any frame; these tests are the frames'
    torch.manual_seed(0)
    return GalaxyModel(config.validate(), ("g", "r"), 32, [0.05, 0.05]).eval()


def test_o2_model_finds_turned_copies_a_plain_model_does_not():
    n = 40
    rng = np.random.default_rng(4)
    shape = _shapes(n, seed=4)
    zero = np.zeros(n)
    originals = _render(rng.uniform(0, 2 * math.pi, n), zero, np.zeros((n, 2)), shape)
    copies = _render(rng.uniform(0, 2 * math.pi, n), rng.random(n) < 0.5, np.zeros((n, 2)), shape)
    rank1 = {}
    for frame in ("o2", "none"):
        model = _model(frame)
        with torch.inference_mode():
            ranks = placement_ranks(model.encode(originals), model.encode(copies), "l1")
        rank1[frame] = float(np.mean(ranks == 1))
    assert rank1["o2"] >= 0.95, rank1
    assert rank1["none"] < 0.6, rank1


def test_decoding_turns_back_with_the_stamp():
    model = _model("o2")
    x = _render(np.full(4, 0.5), np.zeros(4), np.zeros((4, 2)), _shapes(4, seed=5))
    turned = torch.rot90(x, 1, (-2, -1))
    with torch.inference_mode():
        drawn, drawn_turned = model.reconstruct(x), model.reconstruct(turned)
    assert torch.allclose(drawn_turned, torch.rot90(drawn, 1, (-2, -1)), atol=1e-3)
    # the drawing is not the same image in both orientations: the frame did turn it back
    assert float(_relative(drawn_turned, drawn).min()) > 0.05


def test_without_a_frame_the_pose_still_reaches_the_drawing():
    """``frame: none`` with ``draw_frame: o2``: the encoder reads the stamp as given (its latent of a
    turned stamp is another vector), and the same latent drawn with each stamp's pose comes out turned."""
    model = _model("none", "o2")
    x = _render(np.full(4, 0.5), np.zeros(4), np.zeros((4, 2)), _shapes(4, seed=5))
    turned = torch.rot90(x, 1, (-2, -1))
    with torch.inference_mode():
        latent = model.encode(x)
        assert torch.equal(latent, model.encoder(model.normalize(x)))
        assert float(_relative(model.encode(turned), latent).min()) > 0.01
        frame, frame_turned = model.frame(model.normalize(x)), model.frame(model.normalize(turned))
        drawn, drawn_turned = model.decode(latent, frame), model.decode(latent, frame_turned)
    assert torch.allclose(drawn_turned, torch.rot90(drawn, 1, (-2, -1)), atol=1e-3)
    assert float(_relative(drawn_turned, drawn).min()) > 0.05


def _moffat(fwhm: float, size: int = 48) -> torch.Tensor:
    """``(1, 2, size, size)``: a unit-flux beta = 3 Moffat star (two bands), as a PSF of ``fwhm`` px."""
    import galsim

    profile = galsim.Moffat(beta=3.0, fwhm=fwhm).drawImage(nx=size, ny=size, scale=1.0).array
    return torch.from_numpy(np.stack([profile, 0.6 * profile]).astype(np.float32))[None]


def test_compact_objects_reach_the_encoder_at_one_size_under_any_seeing():
    sharp, wide = _moffat(3.2), _moffat(4.2)  # two observations of one star, seeing 30% apart
    stars = torch.cat((sharp, wide))
    affine = pose_frame(stars)
    scale = compact_scale(stars.sum(dim=1), affine, size=1.8)
    assert 0.7 < float(scale[0]) < float(scale[1]) < 1.0  # both magnified, the sharper one more
    plain = to_pose_frame(stars, affine)[0]
    framed = to_pose_frame(stars, scale_pose_frame(affine, scale))[0]
    # the same flux: compare the shapes. The fixed window underestimates the change of size (the scales
    # differ by 15% where the FWHMs differ by 31%), so the magnified stars come closer, not equal
    apart = float(_relative(plain[:1] / plain[0].sum(), plain[1:] / plain[1].sum()))
    assert apart > 0.3
    assert float(_relative(framed[:1] / framed[0].sum(), framed[1:] / framed[1].sum())) < 0.45 * apart
    # a galaxy larger than the size is left as it is
    galaxy = _render(np.zeros(1), np.zeros(1), np.zeros((1, 2)), np.array([[5.0, 0.6, 3.0]]), size=48)
    assert float(compact_scale(galaxy.sum(dim=1), pose_frame(galaxy), size=1.8)) == 1.0


def test_drawing_in_a_magnified_frame_turns_and_shrinks_back():
    n = 6
    rng = np.random.default_rng(3)
    shape = _shapes(n)
    shape[:, 0] = 1.6  # compact
    images = _render(rng.uniform(0, 2 * math.pi, n), rng.random(n) < 0.5, np.zeros((n, 2)), shape)
    plain = pose_frame(images)
    affine = scale_pose_frame(plain, torch.full((n,), 0.7))
    assert torch.allclose(torch.linalg.det(affine[:, :, :2]).abs(), torch.full((n,), 0.49))
    back = from_pose_frame(to_pose_frame(images, affine)[0], affine)
    # magnified, a compact galaxy is better sampled: its round trip is no worse than the plain frame's
    error = _relative(back, images)
    assert float(error.max()) < 0.11
    assert (error <= _relative(from_pose_frame(to_pose_frame(images, plain)[0], plain), images)).all()


def test_the_model_reads_compact_stamps_magnified_unless_told_not_to():
    star = _moffat(3.6, size=32) * 500 + 0.0
    config = TrainConfig(objective="ae")
    config.model.widths, config.model.latent_dim, config.model.compact_size = (8, 16), 8, 0.0
    plain = GalaxyModel(config.validate(), "gr", 32, [1.0, 1.0])
    config.model.compact_size = None  # the default: half the DES r-band FWHM in the pose frame
    magnifying = GalaxyModel(config.validate(), "gr", 32, [1.0, 1.0])
    x = plain.normalize(star)
    assert abs(float(torch.linalg.det(plain.frame(x)[:, :, :2]).abs()) - 1) < 1e-5
    assert float(torch.linalg.det(magnifying.frame(x)[:, :, :2]).abs()) < 0.8
