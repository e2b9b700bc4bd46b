"""Tiny synthetic stores for the training tests: three visually distinct classes with noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galmoco.config import MocoConfig, ModelConfig, OptimConfig, TrainConfig
from galmoco.io.store import write_store

CLASSES = ("round", "elongated", "two-blob")


def _gaussian(yy: np.ndarray, xx: np.ndarray, x0: float, y0: float, sx: float, sy: float,
              theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    u = (xx - x0) * c + (yy - y0) * s
    v = -(xx - x0) * s + (yy - y0) * c
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def write_synthetic_store(path: Path, n: int = 192, size: int = 32, bands: str = "griz",
                          seed: int = 0) -> Path:
    """Write a complete store per docs/architecture.md: ``n`` objects cycling through :data:`CLASSES`
    (round Gaussian, elongated Gaussian, two blobs) at random orientations, fluxes and sub-pixel
    centres, with unit-variance Gaussian sky noise in every band (weights 1) and a ``class`` column."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    colours = np.linspace(0.6, 1.4, len(bands))
    images = np.empty((n, len(bands), size, size), np.float32)
    labels = []
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        c = size / 2 - 0.5 + rng.uniform(-1, 1, 2)
        theta = rng.uniform(0, np.pi)
        amp = rng.uniform(20, 40)
        if kind == "round":
            img = _gaussian(yy, xx, c[0], c[1], 3.0, 3.0, 0.0)
        elif kind == "elongated":
            img = _gaussian(yy, xx, c[0], c[1], 6.0, 1.5, theta)
        else:
            d = 5.0 * np.array([np.cos(theta), np.sin(theta)])
            img = _gaussian(yy, xx, *(c + d), 1.8, 1.8, 0.0) + _gaussian(yy, xx, *(c - d), 1.8, 1.8, 0.0)
        images[i] = amp * colours[:, None, None] * img + rng.normal(0, 1.0, (len(bands), size, size))
        labels.append(kind)
    return write_store(path, images, bands=bands, catalog={
        "id": [f"obj{i:05d}" for i in range(n)], "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-60, 0, n),
        "source": ["synthetic"] * n, "class": labels})


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """192 objects of 4x32x32 in three classes."""
    return write_synthetic_store(tmp_path / "tiny.h5")


def tiny_config(**kwargs) -> TrainConfig:
    """A fast configuration for 32x32 stamps on CPU (small widths, batch 32, 4 BN splits, one thread:
    the test machine is shared, and spinning OpenMP threads make a busy machine much slower)."""
    base = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=0, num_threads=1,
                       optim=OptimConfig(lr=0.01, cosine=True),
                       model=ModelConfig(widths=(8, 16, 32), latent_dim=32, proj_dim=32),
                       moco=MocoConfig(bn_splits=4, momentum=0.99, temperature=0.2))
    for key, value in kwargs.items():
        setattr(base, key, value)
    return base
