"""The eight symmetries of the square against numpy, as a group, and batched per stamp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galmoco.data.transforms import (
    PLACEMENT_TRANSFORMS,
    SYMMETRIES,
    TRANSFORMS,
    apply_symmetry,
    apply_symmetry_index,
    apply_transform,
    border_sky,
    galaxy_seeds,
    parse_angles,
    placement_transforms,
    random_angles,
    rotate,
    rotation_angle,
)
from galmoco.errors import GalmocoError

#: numpy reference of each element on a 2-d array (rows = y, columns = x)
REFERENCE = {
    "identity": lambda a: a,
    "flip1": lambda a: a[::-1, :],
    "flip2": lambda a: a[:, ::-1],
    "flip3": lambda a: a[::-1, ::-1],
    "rot90": lambda a: np.rot90(a, 1),
    "rot270": lambda a: np.rot90(a, -1),
    "transpose": lambda a: a.T,
    "antitranspose": lambda a: a[::-1, ::-1].T,
}


def test_names():
    assert SYMMETRIES[0] == "identity" and TRANSFORMS == SYMMETRIES[1:] and len(set(SYMMETRIES)) == 8


@pytest.mark.parametrize("name", SYMMETRIES)
def test_each_element_matches_numpy(name):
    image = torch.arange(3 * 5 * 5, dtype=torch.float32).reshape(1, 3, 5, 5)
    out = apply_symmetry(image, name)
    assert out.shape == image.shape
    for band in range(3):
        assert np.array_equal(out[0, band].numpy(), REFERENCE[name](image[0, band].numpy()))
    assert out.data_ptr() != image.data_ptr()  # always a new tensor


def test_closed_group_with_inverses():
    image = torch.randn(1, 1, 6, 6)
    outputs = {name: apply_symmetry(image, name) for name in SYMMETRIES}
    for a in SYMMETRIES:
        for b in SYMMETRIES:
            composed = apply_symmetry(apply_symmetry(image, a), b)
            assert sum(torch.equal(composed, out) for out in outputs.values()) == 1
    assert torch.equal(apply_symmetry(outputs["rot90"], "rot270"), image)
    for name in ("flip1", "flip2", "flip3", "transpose", "antitranspose"):
        assert torch.equal(apply_symmetry(outputs[name], name), image)


def test_per_stamp_index():
    images = torch.randn(20, 2, 7, 7)
    index = torch.tensor([k % 8 for k in range(20)])
    out = apply_symmetry_index(images, index)
    for n in range(20):
        assert torch.equal(out[n], apply_symmetry(images[n], SYMMETRIES[index[n]]))


def test_unknown_name():
    with pytest.raises(ValueError, match="flip4"):
        apply_symmetry(torch.zeros(1, 1, 2, 2), "flip4")


def _blob(size: int = 48) -> torch.Tensor:
    """A smooth, asymmetric, noise-free source (an elliptical Gaussian and a knot), ``(1, 1, size, size)``."""
    c = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size) - c + 3, torch.arange(size) - c - 2, indexing="ij")
    knot = torch.exp(-0.5 * ((x - 5) ** 2 + (y + 4) ** 2) / 1.5**2)
    image = torch.exp(-0.5 * ((x / 4) ** 2 + (y / 2) ** 2)) + 0.5 * knot
    return image[None, None].float()


def test_quarter_turns_are_exact_and_turns_compose_in_the_sense_of_rot90():
    images = torch.randn(3, 2, 16, 16)
    assert torch.equal(rotate(images, 90), apply_symmetry(images, "rot90"))
    assert torch.equal(rotate(images, -90), apply_symmetry(images, "rot270"))
    assert torch.equal(rotate(images, 180), apply_symmetry(images, "flip3"))
    assert torch.equal(rotate(images, 0), images)
    blob = _blob()
    quarter = apply_symmetry(blob, "rot90")
    assert (rotate(rotate(blob, 45), 45) - quarter).abs().max() < 1e-4
    assert (rotate(rotate(blob, 30), 60) - quarter).abs().max() < 1e-4
    # and not the other way round
    assert (rotate(rotate(blob, 45), 45) - apply_symmetry(blob, "rot270")).abs().max() > 0.5
    # per-stamp angles: each stamp as if turned alone
    both = torch.cat([blob, 2 * blob])
    out = rotate(both, torch.tensor([30.0, 120.0]))
    assert torch.allclose(out[1:], rotate(2 * blob, 120), atol=1e-6)
    assert torch.allclose(out[:1], rotate(blob, 30), atol=1e-6)


def test_a_point_moves_along_the_circle():
    point = torch.zeros(1, 1, 33, 33)  # centre (16, 16); a smooth spot 8 px to the right of it
    y, x = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    point[0, 0] = torch.exp(-0.5 * ((x - 24) ** 2 + (y - 16) ** 2))
    (quarter,) = (apply_symmetry(point, "rot90")[0, 0] == point.max()).nonzero().tolist()
    half_way = torch.tensor([0.0, 8.0]) + torch.tensor(quarter, dtype=torch.float32) - 16
    expected = 16 + 8 * half_way / half_way.norm()  # 8 px out, half way between the two
    turned = rotate(point, 45)[0, 0]
    peak = torch.tensor(divmod(int(turned.argmax()), 33), dtype=torch.float32)
    assert (peak - expected).abs().max() <= 0.5


@pytest.mark.parametrize("degrees", [15.0, 30.0, 45.0, 60.0, 75.0, -20.0, 200.0])
def test_rotation_conserves_flux(degrees):
    blob = 1000 * _blob()
    assert rotate(blob, degrees).sum().item() == pytest.approx(blob.sum().item(), rel=1e-5)


def test_corners_are_sky_noise_and_noise_keeps_its_level():
    sky = 5.0 + 2.0 * torch.randn(16, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    median, sigma = border_sky(sky)
    assert torch.allclose(median, torch.full((16, 2), 5.0), atol=0.35)
    assert torch.allclose(sigma, torch.full((16, 2), 2.0), atol=0.35)
    turned = rotate(sky, 45, seeds=galaxy_seeds(0, np.arange(16)))
    corners = turned[..., :8, :8]  # turned in from outside the stamp
    assert corners.mean().item() == pytest.approx(5.0, abs=0.1)
    assert corners.std().item() == pytest.approx(2.0, rel=0.05)  # sky, never zeros
    assert turned.std().item() == pytest.approx(2.0, rel=0.02)  # a unitary resampling: no smoothing
    # the same seed, the same sky, whatever the batch
    alone = rotate(sky[5:6], 45, seeds=galaxy_seeds(0, np.array([5])))
    assert torch.equal(alone, turned[5:6])
    other = rotate(sky[5:6], 45, seeds=galaxy_seeds(1, np.array([5])))
    assert not torch.equal(other[..., :8, :8], alone[..., :8, :8])


def test_light_turned_out_of_the_stamp_does_not_wrap_back():
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    corner = (100 * torch.exp(-0.5 * ((x - 3) ** 2 + (y - 3) ** 2) / 1.5**2))[None, None]
    assert rotate(corner, 45).abs().max() < 0.5  # the corner turns out of the stamp, nowhere else


def test_names_and_angles():
    assert PLACEMENT_TRANSFORMS == (*TRANSFORMS, "rot15", "rot30", "rot45", "rot60", "rot75", "rotrand")
    assert placement_transforms((22.5, 90.0), random=False) == (*TRANSFORMS, "rot22p5")  # rot90 is in D4
    assert rotation_angle("rot22p5") == 22.5 and rotation_angle("rotrand") is None
    assert rotation_angle("rot90") is None
    assert parse_angles("15, 30,rand,15") == ((15.0, 30.0), True)
    with pytest.raises(GalmocoError, match="--angles: 'x'"):
        parse_angles("15,x")
    seeds = galaxy_seeds(3, np.arange(1000))
    assert len(set(seeds.tolist())) == 1000 and (seeds >= 0).all()
    angles = random_angles(seeds)
    assert angles.min() >= 0 and angles.max() < 360 and abs(angles.mean().item() - 180) < 15
    images = torch.randn(4, 1, 16, 16)
    assert torch.equal(apply_transform(images, "flip1"), apply_symmetry(images, "flip1"))
    s = galaxy_seeds(0, np.arange(4))
    assert torch.equal(apply_transform(images, "rotrand", s), rotate(images, random_angles(s), s))
    with pytest.raises(ValueError, match="rotx"):
        apply_transform(images, "rotx")
