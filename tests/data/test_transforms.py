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
    rotate,
)

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


def test_rotate_agrees_with_the_quarter_turns_and_moves_a_point_by_45_degrees():
    images = torch.randn(3, 2, 16, 16)
    assert torch.allclose(rotate(images, 90), apply_symmetry(images, "rot90"), atol=1e-4)
    assert torch.allclose(rotate(images, 0), images, atol=1e-4)
    assert torch.equal(apply_transform(images, "flip1"), apply_symmetry(images, "flip1"))
    assert PLACEMENT_TRANSFORMS == (*TRANSFORMS, "rot45")
    point = torch.zeros(1, 1, 33, 33)  # centre (16, 16); a point 8 px to the right of it
    point[0, 0, 16, 24] = 1.0
    (quarter,) = apply_symmetry(point, "rot90")[0, 0].nonzero().tolist()  # where rot90 sends it
    half_way = torch.tensor([0.0, 8.0]) + torch.tensor(quarter, dtype=torch.float32) - 16
    expected = 16 + 8 * half_way / half_way.norm()  # 8 px out, half way between the two
    turned = apply_transform(point, "rot45")[0, 0]
    peak = torch.tensor(divmod(int(turned.argmax()), 33), dtype=torch.float32)
    assert (peak - expected).abs().max() <= 0.5
    assert turned.sum() == pytest.approx(1.0, abs=0.05)  # bilinear spreads the flux, does not lose it
