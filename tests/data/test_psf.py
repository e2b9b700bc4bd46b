"""change_seeing turns a Moffat PSF into the Moffat of the stated FWHM (GalSim as the reference), keeps the
flux and caps the sharpening; moffat_mtf is GalSim's Moffat transform."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import torch

from galmoco.data.augment import AugmentConfig, GalaxyAugment
from galmoco.data.psf import change_seeing, moffat_mtf, seeing_gain


def _moffat_star(fwhm: float, size: int = 64, flux: float = 1000.0) -> torch.Tensor:
    """A beta = 3 Moffat star of ``fwhm`` pixels at the stamp centre, ``(1, 1, size, size)`` float32."""
    image = galsim.Moffat(beta=3.0, fwhm=fwhm, flux=flux).drawImage(
        nx=size, ny=size, scale=1.0, method="no_pixel").array
    return torch.from_numpy(image.astype(np.float32))[None, None]


@pytest.mark.parametrize("fwhm", [2.5, 3.6, 5.0])
def test_moffat_mtf_is_galsims(fwhm):
    k = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7])
    moffat = galsim.Moffat(beta=3.0, fwhm=fwhm)
    reference = [moffat.kValue(galsim.PositionD(2 * np.pi * v, 0)).real for v in k]
    got = moffat_mtf(torch.from_numpy(k), torch.tensor(fwhm)).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-12)


def test_seeing_gain_is_the_ratio_of_the_two_transforms():
    """The tabulated transform, read once per distinct |k|, against the Bessel functions everywhere."""
    ratio = torch.exp(0.3 * torch.randn(16, 4, generator=torch.Generator().manual_seed(3)))
    ky, kx = torch.fft.fftfreq(40, dtype=torch.float64), torch.fft.rfftfreq(40, dtype=torch.float64)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    exact = moffat_mtf(k, 3.6 * ratio.double()[:, :, None, None]) / moffat_mtf(k, torch.tensor(3.6))
    got = seeing_gain(ratio, 3.6, (40, 40), max_gain=3.0)
    assert got.shape == (16, 4, 40, 21)
    np.testing.assert_allclose(got.numpy(), exact.clamp(max=3.0).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ratio", [1.3, 1.1, 0.9, 0.8])
def test_a_moffat_star_becomes_the_moffat_of_the_new_fwhm(ratio):
    fwhm = 3.6
    star = _moffat_star(fwhm)
    out = change_seeing(star, torch.tensor([[ratio]]), fwhm, max_gain=1e6)
    expected = _moffat_star(fwhm * ratio)
    assert float(out.sum()) == pytest.approx(float(star.sum()), rel=1e-5)  # flux kept
    peak = float(expected.max())
    assert float((out - expected).abs().max()) < 0.01 * peak
    assert float(out.max()) == pytest.approx(peak, rel=0.01)  # the peak moves as the seeing says


def test_ratio_one_is_the_identity_and_each_band_has_its_own():
    stamps = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(change_seeing(stamps, torch.ones(3, 4), 3.6), stamps, atol=1e-5)
    ratio = torch.ones(3, 4)
    ratio[1, 2] = 1.2
    changed = (change_seeing(stamps, ratio, 3.6) - stamps).abs().amax(dim=(-2, -1)) > 1e-3
    assert changed.nonzero().tolist() == [[1, 2]]


def test_sharpening_gain_is_capped():
    """White noise sharpened far beyond the cap: no frequency gains more than max_gain."""
    noise = torch.randn(64, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    out = change_seeing(noise, torch.full((64, 1), 0.3), 3.6, max_gain=3.0)
    gain = torch.fft.rfft2(out).abs() / torch.fft.rfft2(noise).abs()
    assert float(gain.max()) == pytest.approx(3.0, rel=1e-3)
    assert float(gain[..., 0, 0].mean()) == pytest.approx(1.0, abs=1e-4)  # flux kept


def test_seeing_draws_are_last_lognormal_and_mostly_common_to_the_bands():
    def draws(config: AugmentConfig):
        return GalaxyAugment(config, [1.0] * 4).sample(2000, generator=torch.Generator().manual_seed(5))

    off, on = draws(AugmentConfig(seeing_scatter=0.0)), draws(AugmentConfig(seeing_scatter=0.1))
    assert off.seeing_ratio is None
    assert torch.equal(off.symmetry, on.symmetry) and torch.equal(off.blur_sigma, on.blur_sigma)
    log_ratio = np.log(on.seeing_ratio.numpy())
    assert log_ratio.std() == pytest.approx(0.1, rel=0.05)
    assert abs(log_ratio.mean()) < 0.01
    assert np.corrcoef(log_ratio[:, 0], log_ratio[:, 1])[0, 1] == pytest.approx(0.7, abs=0.05)


def test_apply_changes_the_seeing_of_a_star():
    """Through GalaxyAugment.apply: a star's peak falls for a wider draw and rises for a sharper one."""
    augment = GalaxyAugment(AugmentConfig(seeing_scatter=0.1, symmetries=False, jitter=0, blur_prob=0.0,
                                          flux_scale=0.0, split_noise=False), [1e-3])
    star = _moffat_star(augment.config.psf_fwhm).expand(2, 1, 64, 64).contiguous()
    params = augment.sample(2, generator=torch.Generator().manual_seed(0))
    params.seeing_ratio = torch.tensor([[1.2], [0.85]])
    out = augment.apply(star, params)
    peak = float(star.max())
    assert float(out[0].max()) < 0.8 * peak < peak * 1.2 < float(out[1].max())


def test_pair_changes_the_seeing_of_one_copy_chosen_at_random():
    """MoCo's pair: per stamp, one copy keeps the stored seeing and the other is seen through the PSF of
    the drawn ratio, as a second observation is relative to the first."""
    augment = GalaxyAugment(AugmentConfig(split_noise=False), [1.0])
    stars = _moffat_star(augment.config.psf_fwhm).expand(40, 1, 64, 64).contiguous()
    ratio = torch.full((40, 1), 1.25)
    first, second = augment.pair(stars, torch.Generator().manual_seed(0), ratio).chunk(2)
    wider = change_seeing(stars, ratio, augment.config.psf_fwhm)
    first_changed = (first - wider).abs().amax(dim=(1, 2, 3)) < 1e-4
    assert torch.equal(first_changed, (second - stars).abs().amax(dim=(1, 2, 3)) == 0)  # the other: stored
    assert torch.equal(~first_changed, (second - wider).abs().amax(dim=(1, 2, 3)) < 1e-4)
    assert 10 <= int(first_changed.sum()) <= 30  # either copy


def test_views_draw_the_seeing_ratio_between_the_two_views():
    """GalaxyAugment.views: the two views of a star differ in seeing as a lognormal FWHM ratio of
    ``seeing_scatter`` would make them (the spread of their peak ratios against a direct draw)."""
    config = AugmentConfig(seeing_scatter=0.28, symmetries=False, jitter=0, flux_scale=0.0, split_noise=False)
    augment = GalaxyAugment(config, [1.0])
    stars = _moffat_star(config.psf_fwhm).expand(400, 1, 64, 64).contiguous()
    views, params = augment.views(stars, torch.Generator().manual_seed(1))
    assert params.seeing_ratio is None and views.shape == (800, 1, 64, 64)

    def log_peak_ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.log(a.amax(dim=(1, 2, 3)) / b.amax(dim=(1, 2, 3)))

    first, second = views.chunk(2)
    drawn = torch.exp(0.28 * torch.randn(400, 1, generator=torch.Generator().manual_seed(2)))
    direct = log_peak_ratio(change_seeing(stars, drawn, config.psf_fwhm), stars)
    spread = log_peak_ratio(first, second).abs()
    assert float(spread.std()) == pytest.approx(float(direct.abs().std()), rel=0.15)
    assert float(spread.mean()) == pytest.approx(float(direct.abs().mean()), rel=0.15)
    assert float(spread.min()) < 0.01 < 0.3 < float(spread.max())
