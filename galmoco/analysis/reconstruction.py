"""Reconstruction quality: masked errors on galaxy and sky pixels, and example stamps for the grid.

Errors are mean squared errors in the network's normalised space (``model.normalize``), where the
training loss is computed, so runs with the same normalisation are comparable. Galaxy ("source") and
sky pixels come from :func:`galmoco.data.masks.segmentation_sky` (sep detection on the weighted band
sum, segments dilated), the same rule as the training loss's cached masks; every band of a pixel counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from galmoco.data.masks import MaskConfig, segmentation_sky
from galmoco.distributed import resolve_device
from galmoco.embed import load_checkpoint_model
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore
from galmoco.losses import masked_error_split

__all__ = ["reconstruction_errors", "reconstruction_examples", "sky_masks"]


def sky_masks(images: np.ndarray, weights: np.ndarray, config: MaskConfig) -> np.ndarray:
    """``(N, H, W)`` bool sky masks of a batch, one :func:`segmentation_sky` call per stamp."""
    return np.stack([segmentation_sky(im, w, config) for im, w in zip(images, weights, strict=True)])


def reconstruction_errors(
    checkpoint: str | Path | torch.nn.Module,
    store: str | Path,
    mask_config: MaskConfig | None = None,
    batch_size: int = 256,
    device: str = "auto",
    max_objects: int | None = None,
) -> dict[str, float | int]:
    """Masked reconstruction error of a model on a store, averaged over objects.

    Args:
        checkpoint: checkpoint file, run directory or loaded ``GalaxyModel`` (needs a decoder).
        store: packed HDF5 dataset.
        mask_config: sky-mask parameters (default :class:`MaskConfig`).
        batch_size: stamps per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        max_objects: use only the first this many objects (None: all).

    Returns:
        ``{"source_mse", "sky_mse"}`` (normalised-space units squared, mean over the objects that have
        such pixels), ``"n_objects"``, ``"n_no_source"`` (objects where nothing was detected).
    """
    config = mask_config or MaskConfig()
    dev = resolve_device(device)
    model = load_checkpoint_model(checkpoint, dev)
    src_all, sky_all = [], []
    with CutoutStore(store) as data, torch.inference_mode():
        n = len(data) if max_objects is None else min(len(data), max_objects)
        for start in tqdm(range(0, n, batch_size), desc="reconstruct", unit="batch", disable=None):
            idx = np.arange(start, min(n, start + batch_size))
            images, weights = data.read_batch(idx), data.read_batch(idx, "weights")
            x = torch.from_numpy(images).to(dev)
            src, sky = masked_error_split(model.reconstruct(x).float().cpu(),
                                          model.normalize(x).float().cpu(),
                                          torch.from_numpy(sky_masks(images, weights, config)))
            src_all.append(src.numpy())
            sky_all.append(sky.numpy())
    if not src_all:
        raise GalmocoError(f"{store}: the store holds no stamps")
    src, sky = np.concatenate(src_all), np.concatenate(sky_all)
    return {"source_mse": float(np.nanmean(src)) if np.isfinite(src).any() else float("nan"),
            "sky_mse": float(np.nanmean(sky)) if np.isfinite(sky).any() else float("nan"),
            "n_objects": int(len(src)), "n_no_source": int(np.isnan(src).sum())}


def reconstruction_examples(
    model: torch.nn.Module, store: str | Path, indices: np.ndarray, mask_config: MaskConfig | None = None
) -> dict[str, np.ndarray]:
    """Stamps for the reconstruction grid, all in the normalised space.

    Args:
        model: loaded ``GalaxyModel`` with a decoder.
        store: packed HDF5 dataset.
        indices: catalogue rows to show.
        mask_config: sky-mask parameters (default :class:`MaskConfig`).

    Returns:
        ``original``, ``reconstruction``, ``residual`` (reconstruction - original), each
        ``(K, B, H, W)`` float32, and ``sky`` ``(K, H, W)`` bool.
    """
    with CutoutStore(store) as data:
        images, weights = data.read_batch(indices), data.read_batch(indices, "weights")
    dev = next(model.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(images).to(dev)
        original = model.normalize(x).float().cpu().numpy()
        recon = model.reconstruct(x).float().cpu().numpy()
    return {"original": original, "reconstruction": recon, "residual": recon - original,
            "sky": sky_masks(images, weights, mask_config or MaskConfig())}
