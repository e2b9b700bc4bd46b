"""Fixtures for the data layer: constructed galaxy stamps and a tiny packed store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galmoco.io import store

#: per-band sky sigma of the constructed stamps (counts at zero point 30, DES-like g r i z)
SKY_SIGMA = np.array([2.0, 2.6, 4.6, 8.8])


def gaussian_source(size: int = 64, amplitude: float = 400.0, sigma: float = 3.0,
                    centre: tuple[float, float] | None = None) -> np.ndarray:
    """A noise-free circular Gaussian ``(size, size)`` float64 with peak ``amplitude``."""
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    y, x = np.mgrid[:size, :size]
    return amplitude * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def noisy_stamp(rng: np.random.Generator, size: int = 64, amplitude: float = 400.0,
                sky_sigma: np.ndarray = SKY_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """A centred Gaussian galaxy on Gaussian sky noise in every band, and its inverse-variance weights."""
    source = gaussian_source(size, amplitude)
    image = np.stack([source + rng.normal(0.0, s, (size, size)) for s in sky_sigma]).astype(np.float32)
    weight = np.broadcast_to((1.0 / sky_sigma**2)[:, None, None], image.shape).astype(np.float32)
    return image, weight


def write_store(path: Path, images: np.ndarray, weights: np.ndarray, bands: str = "griz") -> Path:
    """A packed store of these stamps (:func:`galmoco.io.store.write_store`)."""
    n = len(images)
    return store.write_store(path, images, weights, bands=bands, catalog={
        "ra": np.linspace(10.0, 11.0, n), "dec": np.linspace(-40.0, -39.0, n),
        "source": [f"cutouts/obj{i}" for i in range(n)]})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_store(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Six 4-band 32x32 objects: galaxies of different brightness (one empty stamp) on sky noise."""
    stamps = [noisy_stamp(rng, size=32, amplitude=a) for a in (0.0, 50.0, 150.0, 400.0, 1000.0, 3000.0)]
    images = np.stack([s[0] for s in stamps])
    weights = np.stack([s[1] for s in stamps])
    weights[3, :, :, :4] = 0.0  # a padded strip without data in every band
    return write_store(tmp_path / "tiny.h5", images, weights)


@pytest.fixture
def sky_sigma() -> np.ndarray:
    return SKY_SIGMA.copy()


@pytest.fixture
def make_source():
    """:func:`gaussian_source` (a fixture, so tests need not import the conftest)."""
    return gaussian_source


@pytest.fixture
def make_stamp():
    """:func:`noisy_stamp`."""
    return noisy_stamp


@pytest.fixture
def make_store():
    """:func:`write_store`."""
    return write_store
