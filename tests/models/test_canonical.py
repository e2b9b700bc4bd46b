"""The canonical D4 frame: exact invariance of the frame and of the encoder; equivariant decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galmoco.config import TrainConfig
from galmoco.data.transforms import SYMMETRIES, apply_symmetry
from galmoco.models.canonical import INVERSE, canonical_frame, from_canonical, to_canonical
from galmoco.models.galaxy import GalaxyModel


def _galaxies(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Off-centre elliptical Gaussians in 2 bands plus noise: no stamp has a symmetry."""
    g = torch.Generator().manual_seed(seed)
    u = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    theta = torch.rand(n, 1, 1, generator=g) * np.pi
    x0, y0 = (torch.rand(2, n, 1, 1, generator=g) - 0.5) * 4
    a = (xx - x0) * torch.cos(theta) + (yy - y0) * torch.sin(theta)
    b = -(xx - x0) * torch.sin(theta) + (yy - y0) * torch.cos(theta)
    profile = torch.exp(-0.5 * ((a / 4) ** 2 + (b / 2) ** 2))
    return torch.stack([profile, 0.5 * profile], 1) + 0.05 * torch.randn(n, 2, size, size, generator=g)


def test_inverse_table():
    image = torch.arange(25.0).reshape(1, 1, 5, 5)
    for k, name in enumerate(SYMMETRIES):
        assert torch.equal(apply_symmetry(apply_symmetry(image, name), SYMMETRIES[INVERSE[k]]), image)


def test_every_orientation_has_the_same_canonical_pixels():
    x = _galaxies(40)
    canonical, frame = to_canonical(x)
    assert torch.equal(from_canonical(canonical, frame), x)
    assert len(frame.unique()) > 4  # the frame depends on the stamp, it is not a constant turn
    with torch.autocast("cpu", dtype=torch.bfloat16):  # --amp must not round the scores
        assert torch.equal(canonical_frame(x), frame)
    for name in SYMMETRIES:
        moved, moved_frame = to_canonical(apply_symmetry(x, name))
        assert torch.equal(moved, canonical), name
        assert torch.equal(from_canonical(moved, moved_frame), apply_symmetry(x, name))


def test_symmetric_stamp_has_one_canonical_image():
    u = torch.arange(9.0) - 4
    round_blob = torch.exp(-(u[:, None] ** 2 + u[None] ** 2) / 8).expand(1, 3, 9, 9)
    for name in SYMMETRIES:
        assert torch.equal(to_canonical(apply_symmetry(round_blob, name))[0], round_blob)


def test_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        canonical_frame(torch.zeros(1, 1, 4, 6))


@pytest.mark.parametrize("frame", ["d4", "none"])
def test_model_latent_invariant_and_reconstruction_equivariant(frame):
    torch.manual_seed(0)
    config = TrainConfig(objective="moco-ae")
    config.model.frame = frame
    config.model.widths = (8, 16)
    model = GalaxyModel(config, "gr", 32, [0.05, 0.05]).eval()
    x = _galaxies(16, seed=1)
    with torch.no_grad():
        z, recon = model.encode(x), model.reconstruct(x)
        gaps, recon_gaps = [], []
        for name in SYMMETRIES[1:]:
            moved = apply_symmetry(x, name)
            gaps.append(float((model.encode(moved) - z).abs().max() / z.abs().max()))
            recon_gaps.append(float((model.reconstruct(moved) - apply_symmetry(recon, name)).abs().max()))
    if frame == "d4":  # the same pixels reach the encoder: the same latent, the drawing turned alike
        assert max(gaps) < 1e-5 and max(recon_gaps) < 1e-5
    else:  # a random network is far from invariant
        assert min(gaps) > 1e-2
