"""Each augmentation does what it claims, batched, deterministically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galmoco.data.augment import SYMMETRY_MATRICES, AugmentConfig, GalaxyAugment
from galmoco.data.transforms import SYMMETRIES, apply_symmetry
from galmoco.errors import GalmocoError

SKY = [2.0, 2.6, 4.6, 8.8]
#: every augmentation off; tests switch on the one they check
OFF = dict(symmetries=False, rotate=False, jitter=0, blur_prob=0.0, noise_prob=0.0, flux_scale=0.0,
           seeing_scatter=0.0)


def _augment(**kwargs) -> GalaxyAugment:
    return GalaxyAugment(AugmentConfig(**{**OFF, **kwargs}), SKY)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def galaxies(make_source) -> torch.Tensor:
    """Eight centred 4-band Gaussian galaxies of different sizes, noise-free, float32."""
    sources = [np.stack([make_source(64, 100.0 * (b + 1), 2.0 + 0.3 * i) for b in range(4)])
               for i in range(8)]
    return torch.from_numpy(np.stack(sources)).float()


def _moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Total flux and second moment <r^2> about the stamp centre per stamp and band."""
    h = images.shape[-1]
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(h) - (h - 1) / 2, indexing="ij")
    total = images.sum(dim=(-2, -1))
    return total, (images * (x**2 + y**2)).sum(dim=(-2, -1)) / total


def test_symmetry_matrices_match_named_transforms():
    image = torch.arange(25.0).reshape(1, 1, 5, 5)
    aug = _augment(symmetries=True)
    for k, name in enumerate(SYMMETRIES):
        params = aug.sample(1, generator=_gen())
        params.symmetry[:] = k
        assert torch.equal(aug.apply_geometry(image, params), apply_symmetry(image, name)), name
    assert SYMMETRY_MATRICES.shape == (len(SYMMETRIES), 2, 2)


def test_symmetries_equal_apply_symmetry_of_drawn_element():
    images = torch.randn(64, 3, 16, 16)
    aug = GalaxyAugment(AugmentConfig(**{**OFF, "symmetries": True}), [1.0, 1.0, 1.0])
    params = aug.sample(64, generator=_gen(3))
    out = aug.apply(images, params)
    assert set(params.symmetry.tolist()) == set(range(8))  # 64 draws cover the group
    for n in range(64):
        assert torch.equal(out[n], apply_symmetry(images[n], SYMMETRIES[params.symmetry[n]]))


def test_jitter_shifts_content_with_reflection():
    images = torch.randn(16, 2, 12, 12)
    aug = GalaxyAugment(AugmentConfig(**{**OFF, "jitter": 3}), [1.0, 1.0])
    params = aug.sample(16, generator=_gen(1))
    out = aug.apply(images, params)
    assert params.shift.abs().max() <= 3 and params.shift.abs().max() > 0
    for n in range(16):
        dx, dy = params.shift[n].tolist()
        rows = [min(max(i - dy, -1 - (i - dy)), 23 - (i - dy)) for i in range(12)]  # mirror at the edges
        cols = [min(max(j - dx, -1 - (j - dx)), 23 - (j - dx)) for j in range(12)]
        assert torch.equal(out[n], images[n][:, rows][:, :, cols])


def test_rotation_path_agrees_with_exact_path():
    images = torch.randn(32, 2, 16, 16)
    aug = GalaxyAugment(AugmentConfig(**{**OFF, "symmetries": True, "rotate": True, "jitter": 2}), [1.0, 1.0])
    params = aug.sample(32, generator=_gen(2))
    params.angle.zero_()  # grid_sample at exact pixel centres: the same permutation of pixels
    rotated = aug.apply_geometry(images, params)
    params.angle = None
    assert torch.allclose(rotated, aug.apply_geometry(images, params), atol=1e-5)


def test_rotation_by_a_right_angle_is_rot90():
    images = torch.randn(4, 2, 16, 16)
    aug = _augment(rotate=True)
    params = aug.sample(4, generator=_gen())
    params.angle.fill_(math.pi / 2)
    assert torch.allclose(aug.apply_geometry(images[:, :1].repeat(1, 4, 1, 1), params)[:, :1],
                          apply_symmetry(images[:, :1], "rot90"), atol=1e-4)


def test_rotation_and_jitter_keep_flux_and_size(galaxies):
    aug = _augment(symmetries=True, rotate=True, jitter=4)
    params = aug.sample(8, generator=_gen(4))
    assert (params.angle % (math.pi / 2)).min() > 0.01  # genuinely off-grid angles
    out = aug.apply(galaxies, params)
    total, second = _moments(out)
    total0, second0 = _moments(galaxies)
    assert torch.allclose(total, total0, rtol=1e-3)
    # a shift by (dx, dy) adds dx^2 + dy^2 to <r^2>; bilinear interpolation adds at most 1/6 px^2 per axis
    excess = second - second0 - (params.shift.float() ** 2).sum(1)[:, None]
    assert excess.min() > -1e-2 and excess.max() < 1 / 3 + 1e-2


def test_blur_adds_its_variance_and_keeps_flux(galaxies):
    aug = _augment(blur_prob=1.0, blur_max_fwhm=3.0)
    params = aug.sample(8, generator=_gen(5))
    out = aug.apply(galaxies, params)
    total, second = _moments(out)
    total0, second0 = _moments(galaxies)
    assert torch.allclose(total, total0, rtol=1e-4)
    # a Gaussian of sigma s adds 2 s^2 to <r^2> (s^2 per axis); truncation at 3 sigma loses < 3 %
    added = second - second0
    assert torch.allclose(added, 2 * params.blur_sigma**2, rtol=0.03, atol=1e-3)
    assert (params.blur_sigma > 0).all() and (params.blur_sigma <= 3.0 / 2.3548 + 1e-6).all()


def test_blur_probability_leaves_others_untouched(galaxies):
    aug = _augment(blur_prob=0.5)
    params = aug.sample(8, generator=_gen(6))
    out = aug.apply(galaxies, params)
    untouched = (params.blur_sigma == 0).all(dim=1)
    assert 0 < untouched.sum() < 8
    assert torch.equal(out[untouched], galaxies[untouched])


def test_blur_and_noise_probability_per_stamp():
    aug = _augment(blur_prob=0.5, noise_prob=0.3)
    draws = [aug.sample(3, generator=_gen(seed)) for seed in range(400)]
    blurred = torch.stack([(p.blur_sigma > 0).any(1) for p in draws]).float()
    noisy = torch.stack([(p.noise_sigma > 0).any(1) for p in draws]).float()
    assert set(blurred.sum(1).tolist()) == {1.0, 2.0}  # floor(1.5) or floor(1.5) + 1 of 3
    assert blurred.mean().item() == pytest.approx(0.5, abs=0.04)  # +-3 standard errors
    assert set(noisy.sum(1).tolist()) == {0.0, 1.0} and noisy.mean().item() == pytest.approx(0.3, abs=0.04)


def test_noise_injection_adds_stated_variance():
    aug = _augment(noise_prob=1.0, noise_max_sigmas=1.5)
    zeros = torch.zeros(32, 4, 64, 64)
    params = aug.sample(32, generator=_gen(7))
    out = aug.apply(zeros, params, generator=_gen(8))
    measured = out.square().mean(dim=(-2, -1))
    expected = params.noise_sigma**2
    assert (params.noise_sigma <= 1.5 * torch.tensor(SKY)).all()
    assert measured.sum() / expected.sum() == pytest.approx(1.0, abs=0.01)
    assert torch.allclose(measured, expected, rtol=0.12, atol=1e-6)  # 4096 pixels: 2.2 % sampling error


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_pair_gives_the_views_independent_noise_fields(ratio):
    """A sky-noise stamp's two recorrupted copies: noise uncorrelated; alpha z added, z / alpha taken."""
    sky = torch.tensor(SKY)[None, :, None, None]
    stored = torch.randn(64, 4, 32, 32, generator=_gen(1)) * sky
    first, second = _augment(split_noise=True, split_noise_ratio=ratio).pair(stored, _gen(2)).chunk(2)
    corr = (first * second).mean(dim=(0, 2, 3)) / (first.std(dim=(0, 2, 3)) * second.std(dim=(0, 2, 3)))
    assert corr.abs().max() < 0.02  # 65,536 pixels per band: sampling error 0.004
    added, taken = first - stored, stored - second  # alpha z and z / alpha: ratio alpha^2 per stamp and band
    alpha_sq = (added / taken)[:, :, 0, 0]
    assert torch.allclose(added, alpha_sq[:, :, None, None] * taken, rtol=1e-3, atol=1e-4)
    assert (alpha_sq >= 1 / ratio**2 - 1e-4).all() and (alpha_sq <= ratio**2 + 1e-4).all()
    z_sigma = (added * taken).mean(dim=(2, 3)).sqrt()  # sqrt(E[alpha z * z / alpha]) = the band's sigma
    assert torch.allclose(z_sigma.mean(dim=0), sky.flatten(), rtol=0.02)
    if ratio == 1.0:  # both copies sqrt(2) the stored sigma, their mean the stored stamp
        assert torch.allclose(first.std(dim=(0, 2, 3)), math.sqrt(2) * sky.flatten(), rtol=0.02)
        assert torch.allclose((first + second) / 2, stored, atol=1e-4)
    else:  # the two depths differ
        assert alpha_sq.std() > 0.3
    # without the split both views start from the stored stamp: correlation 1
    shared = _augment(split_noise=False).pair(stored, _gen(2))
    assert torch.equal(shared, torch.cat([stored, stored]))


def test_flux_scale_multiplies_totals_by_the_drawn_factor(galaxies):
    aug = _augment(flux_scale=0.2)
    params = aug.sample(8, generator=_gen(9))
    out = aug.apply(galaxies, params)
    ratio = out.sum(dim=(-2, -1)) / galaxies.sum(dim=(-2, -1))
    assert torch.allclose(ratio, params.scale, rtol=1e-5)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-6)  # colours kept
    assert ratio.min() >= 1 / 1.2 - 1e-6 and ratio.max() <= 1.2 + 1e-6 and ratio.std() > 0


def test_aug_plus_scatters_colours_slightly(galaxies):
    aug = GalaxyAugment(AugmentConfig(**{**OFF, "flux_scale": 0.2, "aug_plus": True}), SKY)
    assert aug.effective.blur_prob == 0.8 and aug.effective.blur_max_fwhm == 3.0
    assert aug.effective.noise_prob == 0.8 and aug.effective.noise_max_sigmas == 2.0
    params = aug.sample(8, generator=_gen(10))
    params.blur_sigma.zero_()  # isolate the flux factors
    params.noise_sigma.zero_()
    out = aug.apply(galaxies, params)
    magnitude = -2.5 * torch.log10(out.sum(dim=(-2, -1)) / galaxies.sum(dim=(-2, -1)))
    colour = magnitude[:, :, None] - magnitude[:, None, :]  # change of every colour b - b'
    assert colour.abs().max() <= 0.1 + 1e-4 and colour.abs().max() > 0.01


def test_band_dropout_zeroes_one_band(galaxies):
    aug = _augment(band_dropout=1.0)
    params = aug.sample(8, generator=_gen(11))
    out = aug.apply(galaxies, params)
    for n in range(8):
        band = int(params.dropped_band[n])
        assert band >= 0 and torch.all(out[n, band] == 0)
        keep = [b for b in range(4) if b != band]
        assert torch.equal(out[n, keep], galaxies[n, keep])


def test_same_seed_same_output_and_input_untouched():
    images = torch.randn(16, 4, 32, 32) * 5
    before = images.clone()
    aug = GalaxyAugment(AugmentConfig(band_dropout=0.3, aug_plus=True), SKY)
    first, second = aug(images, _gen(42)), aug(images, _gen(42))
    assert torch.equal(first, second)
    assert not torch.equal(first, aug(images, _gen(43)))
    assert torch.equal(images, before)
    assert first.shape == images.shape and first.dtype == torch.float32


def test_geometry_carries_masks_along(galaxies):
    aug = GalaxyAugment(AugmentConfig(), SKY)
    params = aug.sample(8, generator=_gen(12))
    moved = aug.apply_geometry(galaxies, params)
    mask = aug.apply_geometry(galaxies[:, 2:3], params)
    assert torch.allclose(mask[:, 0], moved[:, 2])


def test_bad_configs_and_inputs_raise():
    with pytest.raises(GalmocoError, match="blur_prob"):
        AugmentConfig(blur_prob=1.5)
    with pytest.raises(GalmocoError, match="jitter"):
        AugmentConfig(jitter=-1)
    with pytest.raises(GalmocoError, match="seeing_scatter must be >= 0, got -0.1"):
        AugmentConfig(seeing_scatter=-0.1)
    with pytest.raises(GalmocoError, match="split_noise_ratio must be >= 1, got 0.5"):
        AugmentConfig(split_noise_ratio=0.5)
    aug = GalaxyAugment(AugmentConfig(), SKY)
    with pytest.raises(GalmocoError, match=r"\(N, 4, H, W\)"):
        aug(torch.zeros(2, 3, 16, 16))
    with pytest.raises(GalmocoError, match="square"):
        aug(torch.zeros(2, 4, 16, 20))
