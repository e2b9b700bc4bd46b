"""Batched inference: the latent vector of every stamp of a packed store, written as a table.

The table holds the store's catalogue (``id``, ``ra``, ``dec`` and every other column), ``latent``
``(N, D)`` float32, optionally ``projection`` (the projection head's output), ``stamp_snr`` (the
aperture signal-to-noise of each stamp, :func:`stamp_snr`) and, with ``transforms=True``,
``latent_<name>`` for each of the 7 non-identity symmetries of the square, the turns by arbitrary
angles and ``rotrand`` (:func:`galmoco.data.transforms.placement_transforms`; the random angle of each
galaxy in ``angle_rotrand``, degrees), the input of similarity placement; with the projection too,
``projection_<name>`` for every copy. Table formats: :mod:`galmoco.io.tables`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from tqdm.auto import tqdm

from galmoco.data.transforms import (
    DEFAULT_ANGLES,
    RANDOM_ROTATION,
    apply_transform,
    border_sky,
    galaxy_seeds,
    placement_transforms,
    random_angles,
)
from galmoco.distributed import resolve_device
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, read_catalog
from galmoco.io.tables import read_table, table_format, write_table

__all__ = [
    "embed_store",
    "load_checkpoint_model",
    "read_embeddings",
    "stamp_snr",
]


def load_checkpoint_model(checkpoint: str | Path | torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A ``GalaxyModel`` in eval mode from a checkpoint file, a run directory or a model object.

    Args:
        checkpoint: ``last.pt``-style file, a run directory (its ``checkpoints/last.pt`` is used), or an
            already loaded model (moved to ``device``).
        device: where the model runs.
    """
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint.to(device).eval()
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise GalmocoError(f"{path}: checkpoint not found")
    from galmoco.train.checkpoint import load_model  # torch-heavy training stack: only when needed

    return load_model(path, device=str(device)).eval()


def read_embeddings(path: str | Path) -> Table:
    """Read an embeddings table written by :func:`embed_store` (see :func:`galmoco.io.tables.read_table`)."""
    return read_table(path)


def stamp_snr(images: torch.Tensor) -> torch.Tensor:
    """Aperture signal-to-noise of each stamp's central object, all bands together.

    The flux inside a circle of radius ``H / 4`` about the stamp centre, less each band's sky level,
    summed over bands, over the noise of that sum for sky-dominated pixels:
    ``S/N = sum_b sum_ap (I - m_b) / sqrt(n_ap sum_b sigma_b^2)``, with ``m_b`` and ``sigma_b`` the
    median and MAD sigma of the stamp's border (:func:`galmoco.data.transforms.border_sky`).

    Args:
        images: ``(N, C, H, W)`` raw stamps (any flux units).

    Returns:
        ``(N,)`` float32 (NaN where the border carries no noise).
    """
    n, c, h, w = images.shape
    median, sigma = border_sky(images.float())
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    aperture = (x**2 + y**2 <= (min(h, w) / 4) ** 2).to(images.device)
    flux = ((images.float() - median[..., None, None]) * aperture).sum(dim=(1, 2, 3))
    noise = torch.sqrt(aperture.sum() * (sigma**2).sum(dim=1))
    return torch.where(noise > 0, flux / noise, torch.full_like(flux, float("nan")))


def _encode_all(
    model: torch.nn.Module, data: CutoutStore, dev: torch.device, transforms: tuple[str, ...],
    with_projection: bool, batch_size: int, seed: int,
) -> dict[str, np.ndarray]:
    """Encode a :class:`~galmoco.io.store.CutoutStore` in contiguous slices; column name -> (N, ...)."""
    n = len(data)
    if n == 0:
        raise GalmocoError(f"{data.path}: the store holds no stamps")
    prefixes = ("latent", "projection") if with_projection else ("latent",)
    parts: dict[str, list[np.ndarray]] = {"stamp_snr": []}
    if RANDOM_ROTATION in transforms:
        parts[f"angle_{RANDOM_ROTATION}"] = []
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def encode(suffix: str, stamps: torch.Tensor) -> None:
        latent = model.encode(stamps)
        vectors = {"latent": latent, "projection": model.project(latent) if with_projection else None}
        for prefix in prefixes:
            parts.setdefault(prefix + suffix, []).append(vectors[prefix].float().cpu().numpy())

    with torch.inference_mode(), autocast, tqdm(total=n, desc="embed", unit="img", disable=None) as bar:
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(n, start + batch_size))
            images = torch.from_numpy(data.read_batch(rows)).to(dev)
            encode("", images)
            parts["stamp_snr"].append(stamp_snr(images).cpu().numpy())
            seeds = galaxy_seeds(seed, rows)
            angles = random_angles(seeds) if RANDOM_ROTATION in transforms else None
            if angles is not None:
                parts[f"angle_{RANDOM_ROTATION}"].append(angles.numpy())
            for t in transforms:
                encode(f"_{t}", apply_transform(images, t, seeds, angles))
            bar.update(images.shape[0])
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}


def embed_store(
    checkpoint: str | Path | torch.nn.Module,
    store: str | Path,
    out: str | Path,
    transforms: bool = False,
    with_projection: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    angles: Sequence[float] = DEFAULT_ANGLES,
    random_rotation: bool = True,
    seed: int = 0,
) -> Path:
    """Encode every stamp of a packed store and write the catalogue plus latent vectors.

    Reads the store in sorted contiguous slices of ``batch_size`` (memory is bounded by one batch),
    encodes under ``torch.inference_mode`` (bf16 autocast on CUDA), and writes atomically.

    Args:
        checkpoint: checkpoint file, run directory or loaded ``GalaxyModel``.
        store: packed HDF5 dataset (``galmoco pack`` / ``galmoco simulate``).
        out: output table; ``.parquet``, ``.fits`` or ``.h5``.
        transforms: also encode the transformed copies (``latent_<name>`` columns): the 7 D4 elements,
            a turn by each of ``angles`` and, with ``random_rotation``, ``rotrand``.
        with_projection: also write the projection head's output (``projection``, and
            ``projection_<name>`` for each copy).
        batch_size: stamps per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        angles: turns (degrees, counter-clockwise) besides the D4 elements (``rot<angle>`` columns).
        random_rotation: also a uniform random angle per galaxy (``rotrand``; angle in ``angle_rotrand``).
        seed: seeds the random angles and the sky noise that fills turned corners (per galaxy and
            catalogue row, so the same whatever ``batch_size``).

    Returns:
        The output path.
    """
    out = Path(out)
    table_format(out, vectors=True)
    if batch_size < 1:
        raise GalmocoError(f"--batch-size must be positive, got {batch_size}")
    dev = resolve_device(device)
    model = load_checkpoint_model(checkpoint, dev)
    with CutoutStore(store) as data:
        names = placement_transforms(angles, random_rotation) if transforms else ()
        parts = _encode_all(model, data, dev, names, with_projection, batch_size, seed)
    table = Table(read_catalog(store), copy=False)
    for key, chunks in parts.items():
        table[key] = chunks
    # short keys: they become FITS header cards
    source = str(checkpoint) if isinstance(checkpoint, str | Path) else "model"
    table.meta.update(CKPT=source, STORE=str(store), SEED=seed)
    return write_table(table, out)
