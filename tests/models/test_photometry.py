"""Aperture photometry in the latent: the apertures, their fluxes, their invariance to the stamp's
symmetries and to a change of seeing, and the model that carries them."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
import torch

from galmoco.config import ModelConfig, TrainConfig
from galmoco.data.normalize import NormalizeConfig, Normalizer
from galmoco.data.psf import change_seeing
from galmoco.data.transforms import apply_symmetry_index
from galmoco.models import GalaxyModel
from galmoco.models.photometry import PhotometricEncoder, aperture_masks, aperture_photometry, boxed_apertures

SKY = [2.0, 2.6, 4.6, 8.8]


class _Zero(torch.nn.Module):
    """An encoder that contributes nothing, so that the latent is the photometric part alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 6)


def _photometric(size: int = 64) -> PhotometricEncoder:
    torch.manual_seed(0)
    return PhotometricEncoder(_Zero(), Normalizer(NormalizeConfig(), SKY), 6, size)


def _moffat_stars(fwhm: float, fluxes: list[float], size: int = 64) -> torch.Tensor:
    """``(1, B, size, size)``: a beta = 3 Moffat star of ``fwhm`` px with one flux per band."""
    profile = galsim.Moffat(beta=3.0, fwhm=fwhm).drawImage(nx=size, ny=size, scale=1.0).array
    return torch.from_numpy(np.stack([f * profile for f in fluxes]).astype(np.float32))[None]


def test_apertures_are_discs_of_the_stated_radii_and_symmetric():
    masks = aperture_masks(64, (4, 8, 12))
    areas = masks.sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(areas, [math.pi * r**2 for r in (4, 8, 12)], rtol=0.06)
    for element in range(8):  # unchanged by every flip and quarter turn of the stamp
        assert torch.equal(apply_symmetry_index(masks[None], torch.tensor([element]))[0], masks)


@pytest.mark.parametrize("size", [63, 64, 65, 96])
def test_the_box_holds_every_aperture_pixel_and_no_empty_row(size):
    radii = tuple(f * size for f in (1 / 16, 2 / 16, 3 / 16))
    full = aperture_masks(size, radii)
    boxed, box = boxed_apertures(size, radii)
    inside = full.amax(dim=(0, 1)).nonzero()  # the rows (and, by symmetry, columns) any aperture touches
    assert (box.start, box.stop) == (int(inside.min()), int(inside.max()) + 1)
    assert torch.equal(boxed, full[:, box, box])
    assert torch.equal(boxed.sum(dim=(1, 2)), full.sum(dim=(1, 2)))


def test_the_encoder_measures_other_sizes_in_their_own_box():
    encoder = _photometric(64)
    assert encoder.apertures(64, torch.device("cpu"))[1] == slice(20, 44)
    masks, box = encoder.apertures(96, torch.device("cpu"))
    assert masks.shape[-1] == box.stop - box.start and box.start + box.stop == 96
    assert "masks" not in encoder.state_dict()  # built from the size, not saved


def test_aperture_photometry_sums_the_flux_inside():
    masks = aperture_masks(32, (2, 4, 6))
    images = torch.ones(2, 3, 32, 32)
    images[1] *= 2.5
    flux = aperture_photometry(images, masks)
    assert flux.shape == (2, 3, 3)
    assert torch.allclose(flux[0, 1], masks.sum(dim=(1, 2)))
    assert torch.allclose(flux[1], 2.5 * flux[0])


def test_features_read_the_raw_flux_through_the_normalisation():
    encoder = _photometric()
    raw = _moffat_stars(3.6, [500.0, 900.0, 1500.0, 2000.0]) + torch.randn(1, 4, 64, 64)
    masks = aperture_masks(64, (4, 8, 12))
    noise = torch.tensor(SKY)[:, None] * masks.sum(dim=(1, 2)).sqrt()
    expected = torch.asinh(aperture_photometry(raw, masks) / noise).flatten(1)
    assert torch.allclose(encoder.features(encoder.normalizer(raw)), expected, rtol=1e-4, atol=1e-4)


def test_photometric_latent_ignores_flips_and_a_change_of_seeing_but_not_the_flux():
    encoder = _photometric()
    star = _moffat_stars(3.6, [500.0, 900.0, 1500.0, 2000.0])
    latent = encoder(encoder.normalizer(star))
    flipped = encoder(encoder.normalizer(apply_symmetry_index(star, torch.tensor([5]))))
    assert torch.allclose(flipped, latent, atol=1e-5)
    wider = change_seeing(star, torch.full((1, 4), 1.3), 3.6)  # the peak falls by 40%
    assert float(wider.max()) < 0.65 * float(star.max())
    features, wider_features = (encoder.features(encoder.normalizer(s)) for s in (star, wider))
    assert torch.allclose(wider_features[:, 2::3], features[:, 2::3], atol=0.03)  # the widest aperture
    brighter = encoder.features(encoder.normalizer(1.1 * star))  # 0.1 mag: told apart
    assert float((brighter - features)[:, 2::3].min()) > 0.08


@pytest.mark.parametrize("objective, photometric", [("moco-ae", True), ("ae", True), ("cmc", False)])
def test_the_model_carries_photometry_unless_the_views_split_the_bands(objective, photometric):
    config = TrainConfig(objective=objective, model=ModelConfig(widths=(8, 16), latent_dim=8))
    model = GalaxyModel(config, "griz", 16, SKY)
    assert isinstance(model.encoder, PhotometricEncoder) == photometric
    off = GalaxyModel(TrainConfig(objective=objective, model=ModelConfig(widths=(8, 16), latent_dim=8,
                                                                         photometry=False)), "griz", 16, SKY)
    assert not isinstance(off.encoder, PhotometricEncoder)
    assert model.encode(torch.randn(2, 4, 16, 16)).shape == (2, 8)


def test_stamps_of_another_size_are_measured_in_the_same_apertures():
    """Built for 64-pixel stamps (radii 4, 8, 12 px): a 48-pixel cutout of the same star gives the same
    features (embed --allow-size)."""
    encoder = _photometric(64)
    assert encoder.radii == (4.0, 8.0, 12.0)
    star = _moffat_stars(3.6, [500.0, 900.0, 1500.0, 2000.0])
    cut = star[..., 8:56, 8:56]
    whole, part = (encoder.features(encoder.normalizer(s)) for s in (star, cut))
    assert torch.allclose(part, whole, atol=1e-4)
    assert encoder(encoder.normalizer(cut)).shape == (1, 6)
