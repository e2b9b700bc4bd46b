"""Fixtures for the embed and analysis tests: a tiny packed store and tiny run dirs.

The store is written with ``galmoco.io.store.write_store``. A run dir holds a real
``config.yaml`` and a real checkpoint of a small, untrained (seeded) ``GalaxyModel`` saved with the
trainer's own ``save_checkpoint``, plus a ``metrics.csv`` per the contract: real inference, no training.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from galmoco.config import ModelConfig, TrainConfig, config_to_dict, save_config
from galmoco.io.store import write_store as store_writer
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import load_model, save_checkpoint

N_OBJECTS = 48
BANDS = "griz"
SIZE = 16
CLASSES = ("disk", "bulge", "empty")
LATENT_DIM = 8


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Elliptical blobs at random angles (and empty sky for class ``empty``) plus noise, flux units."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    images = rng.normal(0, 1.0, size=(n, len(BANDS), SIZE, SIZE)).astype(np.float32)
    classes = [CLASSES[i % 3] for i in range(n)]
    for i, cls in enumerate(classes):
        if cls == "empty":
            continue
        a = rng.uniform(0, np.pi)
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        r = np.hypot(u / 3.0, v / 1.5 + 0.3 * u)  # asymmetric, so flips change the stamp
        profile = np.exp(-r) if cls == "disk" else np.exp(-(r**0.5) * 3)
        colour = np.linspace(0.5, 1.5, len(BANDS))[:, None, None]
        images[i] += (rng.uniform(50, 200) * profile * colour).astype(np.float32)
    return images, classes


def write_store(path: Path, n: int = N_OBJECTS) -> Path:
    """A packed store per docs/architecture.md with truth columns ``class`` and ``hlr_arcsec``."""
    images, classes = make_images(n)
    rng = np.random.default_rng(1)
    hlr = np.array([0.0 if c == "empty" else 1.0 + (c == "disk") for c in classes])
    return store_writer(path, images, bands=BANDS, catalog={
        "id": [f"obj{i:03d}" for i in range(n)], "ra": rng.uniform(10, 11, n), "dec": rng.uniform(-1, 0, n),
        "source": ["sim"] * n, "class": classes, "hlr_arcsec": hlr + rng.normal(0, 0.05, n)})


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("store") / "tiny.h5")


def write_run_dir(path: Path, objective: str = "moco-ae", seed: int = 0) -> Path:
    """A run dir per the contract: config.yaml, checkpoints/last.pt (untrained model), metrics.csv."""
    config = TrainConfig(objective=objective, seed=seed,
                         model=ModelConfig(latent_dim=LATENT_DIM, widths=(4, 8)))
    torch.manual_seed(seed)
    path.mkdir(parents=True)
    model = GalaxyModel(config, tuple(BANDS), SIZE, [1.0] * len(BANDS))
    save_config(config, path / "config.yaml")
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "bands": BANDS,
                     "image_size": SIZE, "sky_sigma": [1.0] * len(BANDS)}, path / "checkpoints" / "last.pt")
    fields = ["epoch", "step", "loss", "loss_contrastive", "loss_recon", "lr", "images_per_s", "knn_acc",
              "time"]
    with open(path / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fields)
        w.writeheader()
        for e in range(5):
            w.writerow(dict(epoch=e, step=10 * (e + 1), loss=2.0 / (e + 1), loss_contrastive=1.0 / (e + 1),
                            loss_recon=1.0 / (e + 1), lr=1e-3, images_per_s=100.0, knn_acc="", time=e * 1.5))
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run_dir(tmp_path_factory.mktemp("runs") / "moco-ae")


@pytest.fixture()
def model(run_dir: Path) -> GalaxyModel:
    return load_model(run_dir / "checkpoints" / "last.pt")


@pytest.fixture()
def make_run(tmp_path: Path):
    """Factory ``make_run(name, objective, seed) -> run dir`` under the test's tmp_path."""
    return lambda name, objective="moco-ae", seed=0: write_run_dir(tmp_path / name, objective, seed)
