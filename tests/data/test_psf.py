"""change_psf widens and sharpens by the stated variance, keeps the flux, and caps the sharpening."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galmoco.data.augment import AugmentConfig, GalaxyAugment
from galmoco.data.psf import change_psf

from .conftest import gaussian_source


def _variance(images: torch.Tensor) -> torch.Tensor:
    """Second moment along the columns about the stamp centre, per stamp and band (pixels^2)."""
    w = images.shape[-1]
    x = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    marginal = images.to(torch.float64).sum(dim=-2)
    return (marginal * x**2).sum(dim=-1) / marginal.sum(dim=-1)


@pytest.mark.parametrize("sigma, change", [(2.0, 1.5), (3.0, 2.0), (3.0, -1.0), (2.5, -2.0)])
def test_gaussian_source_gets_the_stated_variance_and_keeps_its_flux(sigma, change):
    source = torch.from_numpy(gaussian_source(64, 100.0, sigma)).float()[None, None]
    out = change_psf(source, torch.tensor([[change]]), max_gain=1e6)
    assert float(out.sum()) == pytest.approx(float(source.sum()), rel=1e-5)
    assert float(_variance(out)) == pytest.approx(sigma**2 + change, abs=0.02)


def test_zero_change_is_the_identity_and_each_band_has_its_own():
    stamps = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(change_psf(stamps, torch.zeros(3, 4)), stamps, atol=1e-5)
    variance = torch.zeros(3, 4)
    variance[1, 2] = 1.0
    out = change_psf(stamps, variance)
    changed = (out - stamps).abs().amax(dim=(-2, -1)) > 1e-3
    assert changed.nonzero().tolist() == [[1, 2]]


def test_sharpening_gain_is_capped():
    """White noise sharpened far beyond the cap: no frequency gains more than max_gain."""
    noise = torch.randn(64, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    out = change_psf(noise, torch.full((64, 1), -10.0), max_gain=3.0)
    gain = torch.fft.rfft2(out).abs() / torch.fft.rfft2(noise).abs()
    assert float(gain.max()) == pytest.approx(3.0, rel=1e-3)
    assert float(gain[..., 0, 0].mean()) == pytest.approx(1.0, abs=1e-4)  # flux kept


def test_psf_change_draws_are_last_and_mostly_common_to_the_bands():
    off = GalaxyAugment(AugmentConfig(), [1.0] * 4).sample(2000, generator=torch.Generator().manual_seed(5))
    on = GalaxyAugment(AugmentConfig(psf_change=0.5), [1.0] * 4).sample(2000,
                                                                       generator=torch.Generator().manual_seed(5))
    assert off.psf_variance is None
    assert torch.equal(off.symmetry, on.symmetry) and torch.equal(off.blur_sigma, on.blur_sigma)
    v = on.psf_variance.numpy()
    assert v.std() == pytest.approx(0.5, rel=0.05)
    corr = np.corrcoef(v[:, 0], v[:, 1])[0, 1]
    assert corr == pytest.approx(0.7, abs=0.05)
