"""Flux normalisation and the sky-noise estimates it relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galmoco.data.normalize import (
    NormalizeConfig,
    Normalizer,
    asinh,
    estimate_sky_sigma,
    estimate_store_sky_sigma,
)
from galmoco.errors import GalmocoError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_asinh_matches_torch_on_strided_input_and_keeps_gradients(dtype):
    torch.manual_seed(0)
    scales = 10.0 ** torch.randint(-6, 7, (8, 4, 1, 1))  # from the linear range to the logarithmic
    values = (torch.randn(8, 4, 16, 16, dtype=dtype) * scales).transpose(2, 3)
    out = asinh(values)
    assert out.dtype == dtype and out.shape == values.shape
    torch.testing.assert_close(out, torch.asinh(values), rtol=2 * torch.finfo(dtype).eps, atol=0.0)
    leaf = values.clone().requires_grad_(True)  # inside autograd: torch's, with its gradient
    asinh(leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, 1 / torch.sqrt(1 + values.detach() ** 2))


def test_asinh_at_known_values():
    norm = Normalizer(NormalizeConfig("asinh", softening_sigmas=2.0), [1.0, 5.0])
    images = torch.tensor([0.0, 2.0, -2.0, 20.0]).reshape(1, 1, 2, 2).repeat(1, 2, 1, 1)
    images[0, 1] *= 5.0  # band 1 has sky sigma 5: same values in sky units
    expected = torch.tensor([0.0, math.asinh(1.0), -math.asinh(1.0), math.asinh(10.0)]).reshape(2, 2)
    out = norm(images)
    assert torch.allclose(out[0, 0], expected, atol=1e-6)
    assert torch.allclose(out[0, 1], expected, atol=1e-6)


def test_log10_floor_in_sky_sigmas():
    norm = Normalizer(NormalizeConfig("log10", log10_floor=0.1), [2.0])
    images = torch.tensor([200.0, 2.0, 0.1, 0.0, -6.0]).reshape(1, 1, 1, 5)
    out = norm(images).flatten()
    assert torch.allclose(out, torch.tensor([2.0, 0.0, -1.0, -1.0, -1.0]), atol=1e-6)


@pytest.mark.parametrize("method", ["asinh", "log10"])
def test_inverse_round_trip(method):
    norm = Normalizer(NormalizeConfig(method), [2.0, 3.0])
    images = torch.rand(3, 2, 4, 4) * 500 + 1.0  # above the log10 floor
    assert torch.allclose(norm.inverse(norm(images)), images, rtol=1e-4)


@pytest.mark.parametrize("method", ["asinh", "log10"])
def test_flux_in_sky_sigmas_agrees_with_the_inverse(method):
    sky = [0.5, 2.0, 7.0]
    norm = Normalizer(NormalizeConfig(method=method), sky)
    raw = torch.cat((torch.randn(2, 3, 8, 8) * 3, torch.full((1, 3, 8, 8), 4000.0)))  # sky and a bright core
    values = norm(raw)
    expected = norm.inverse(values) / torch.tensor(sky)[None, :, None, None]
    assert torch.allclose(norm.in_sky_sigmas(values), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(GalmocoError, match="expected images"):
        norm.in_sky_sigmas(values[:, :2])


def test_sky_sigma_travels_in_state_dict():
    norm = Normalizer(NormalizeConfig(), [2.0, 2.6, 4.6, 8.8])
    state = norm.state_dict()
    assert torch.allclose(state["sky_sigma"], torch.tensor([2.0, 2.6, 4.6, 8.8]))
    other = Normalizer(NormalizeConfig(), [1.0, 1.0, 1.0, 1.0])
    other.load_state_dict(state)
    images = torch.randn(2, 4, 8, 8) * 10
    assert torch.equal(other(images), norm(images))


def test_bad_inputs_raise():
    with pytest.raises(GalmocoError, match="method"):
        NormalizeConfig("sqrt")
    with pytest.raises(GalmocoError, match="sky_sigma"):
        Normalizer(NormalizeConfig(), [1.0, 0.0])
    with pytest.raises(GalmocoError, match=r"\(N, 2, H, W\)"):
        Normalizer(NormalizeConfig(), [1.0, 1.0])(torch.zeros(1, 3, 4, 4))


def test_sky_sigma_from_pure_noise_within_3_percent(rng):
    sigma = np.array([2.0, 7.5])
    images = rng.normal(0.0, sigma[None, :, None, None], (8, 2, 64, 64)).astype(np.float32)
    assert np.allclose(estimate_sky_sigma(images), sigma, rtol=0.03)


def test_sky_sigma_ignores_a_bright_galaxy(rng, make_stamp, sky_sigma):
    image, _ = make_stamp(rng, amplitude=3000.0)
    assert np.allclose(estimate_sky_sigma(image), sky_sigma, rtol=0.05)


def test_sky_sigma_from_weights_with_fallback(rng):
    images = rng.normal(0.0, 3.0, (2, 2, 32, 32))
    weights = np.zeros_like(images)
    weights[:, 0] = 1 / 4.0  # band 0: weights say sigma 2 exactly
    weights[0, 0, 0, :5] = 0.0  # zero weights are ignored
    sigma = estimate_sky_sigma(images, weights)
    assert sigma[0] == pytest.approx(2.0)
    assert sigma[1] == pytest.approx(3.0, rel=0.05)  # no positive weight: MAD of the pixels


def test_sky_sigma_of_constant_image_raises():
    with pytest.raises(GalmocoError, match="sky noise"):
        estimate_sky_sigma(np.ones((2, 8, 8)))


def test_store_sky_sigma(tiny_store, sky_sigma):
    assert np.allclose(estimate_store_sky_sigma(tiny_store), sky_sigma, rtol=1e-6)
    sampled = estimate_store_sky_sigma(tiny_store, max_objects=3, seed=5, block=2)
    assert np.allclose(sampled, sky_sigma, rtol=1e-6)


def test_store_sky_sigma_without_weights(tmp_path, rng, make_stamp, make_store, sky_sigma):
    stamps = [make_stamp(rng, size=48, amplitude=a) for a in (100.0, 500.0, 2000.0)]
    images = np.stack([s[0] for s in stamps])
    path = make_store(tmp_path / "noweights.h5", images, np.zeros_like(images))
    assert np.allclose(estimate_store_sky_sigma(path), sky_sigma, rtol=0.05)


def test_store_sky_sigma_bad_file(tmp_path):
    with pytest.raises(GalmocoError, match="missing.h5"):
        estimate_store_sky_sigma(tmp_path / "missing.h5")
