"""Sky masks and the per-pixel weights of the masked reconstruction loss.

Three rules (``MaskConfig.rule``), explained in ``docs/data.md``:

- ``"segmentation"`` (default): the astronomer's mask. Background and rms with ``sep.Background``, then
  ``sep.extract(..., segmentation_map=True)`` (SExtractor, Bertin & Arnouts 1996; sep, Barbary 2016)
  on the inverse-variance weighted band sum; pixels outside every segment, after dilating the segments
  by ``dilate`` pixels, are sky. Computed once per object and cached in the store
  (:func:`ensure_sky_masks`).
- ``"positive"``: the original DES MoCo-autoencoder rule, pixels with flux <= 0 get weight 0 (there on
  one band; here on the band sum, see :func:`positive_flux_weights`). Computed on the fly.
- ``"none"``: every pixel weight 1.

Weights are ``sky_weight`` on sky, 1 on sources, 0 where no band carries information, and then divided by
their mean over the stamp, so every stamp's weights average 1 and the loss has the scale of a plain MSE
whatever the rule or sky weight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from galmoco.data.normalize import estimate_sky_sigma
from galmoco.errors import GalmocoError
from galmoco.io.store import open_hdf5

__all__ = [
    "MaskConfig", "segmentation_sky", "sky_pixel_weights", "positive_flux_weights", "ensure_sky_masks",
    "pixel_weights", "mask_key",
]

RULES = ("segmentation", "positive", "none")
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


@dataclass
class MaskConfig:
    """Which pixels count as sky, and how much they weigh in the reconstruction loss.

    Attributes:
        rule: ``"segmentation"``, ``"positive"`` or ``"none"`` (see the module docstring).
        sky_weight: loss weight of a sky pixel relative to a source pixel (1) before normalisation;
            used by the segmentation rule (the positive rule is the original study's, weight 0).
        thresh: detection threshold of ``sep.extract`` in units of the background rms.
        minarea: minimum number of connected pixels above threshold for a source.
        dilate: radius in pixels of the disc by which the segments are grown (catches faint wings).
    """

    rule: str = "segmentation"
    sky_weight: float = 0.1
    thresh: float = 1.5
    minarea: int = 5
    dilate: int = 2

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise GalmocoError(f"mask rule {self.rule!r} is unknown; use one of {', '.join(RULES)}")
        if not 0 <= self.sky_weight <= 1:
            raise GalmocoError(f"sky_weight must be within [0, 1], got {self.sky_weight}")
        if not self.thresh > 0 or self.minarea < 1 or self.dilate < 0:
            raise GalmocoError(f"mask parameters out of range: thresh {self.thresh} (> 0), "
                               f"minarea {self.minarea} (>= 1), dilate {self.dilate} (>= 0)")


def mask_key(config: MaskConfig) -> str:
    """The store field ``masks/<key>`` of a segmentation mask; the key encodes every parameter."""
    return (f"masks/segmentation_t{config.thresh:g}_a{config.minarea}_d{config.dilate}"
            f"_w{config.sky_weight:g}")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a 2-d mask by a disc of ``radius`` pixels (OR of shifted copies)."""
    if radius <= 0:
        return mask
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out |= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return out


def _detection_image(image: np.ndarray, weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted band sum ``sum(w x) / sqrt(sum w)`` (unit noise) and its no-data mask.

    Without weights each band is weighted by ``1 / sigma_b**2`` from its robust pixel noise.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if weight is None:
        sigma = estimate_sky_sigma(image)
        w = np.broadcast_to((1.0 / sigma**2)[:, None, None], image.shape)
    else:
        w = np.nan_to_num(np.asarray(weight, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        w = np.clip(w, 0.0, None)
    wsum = w.sum(axis=0)
    nodata = wsum <= 0
    det = (w * image).sum(axis=0) / np.sqrt(np.where(nodata, 1.0, wsum))
    det[nodata] = 0.0
    return np.ascontiguousarray(det), nodata


def segmentation_sky(image: np.ndarray, weight: np.ndarray | None, config: MaskConfig) -> np.ndarray:
    """Sky pixels of one stamp by sep detection and segmentation.

    The detection image is the inverse-variance weighted band sum; its background and rms come from
    one ``sep.Background`` box covering the stamp (coadd stamps are already sky-subtracted, so only a
    constant offset is removed); sources are ``sep.extract(det - bkg, thresh, err=rms, minarea,
    segmentation_map=True)``; segments are dilated by ``config.dilate`` pixels.

    Args:
        image: ``(B, H, W)`` flux.
        weight: ``(B, H, W)`` inverse variance, or None.
        config: thresholds and dilation.

    Returns:
        ``(H, W)`` bool, True on sky (no-data pixels included).
    """
    try:
        import sep  # imported when used: the other mask rules and the rest of the package do without it
    except ImportError:
        raise GalmocoError("the segmentation sky mask needs sep, one of galmoco's dependencies: pip "
                           "install sep, or choose another mask rule") from None
    det, nodata = _detection_image(image, weight)
    h, w = det.shape
    bkg = sep.Background(det, mask=nodata, bw=w, bh=h, fw=1, fh=1)
    rms = bkg.globalrms
    if not rms > 0:
        return np.ones((h, w), dtype=bool)  # a constant stamp: nothing is detectable
    _, segmap = sep.extract(det - bkg.back(), config.thresh, err=rms, minarea=config.minarea,
                            mask=nodata, segmentation_map=True)
    # sep's filtering can carry a segment into masked pixels; no-data pixels are sky by definition
    return ~_dilate(segmap > 0, config.dilate) | nodata


def sky_pixel_weights(sky: ArrayOrTensor, sky_weight: float,
                      valid: ArrayOrTensor | None = None) -> ArrayOrTensor:
    """Loss weights from a sky mask: ``sky_weight`` on sky, 1 on sources, 0 where not ``valid``; mean 1.

    The weights are divided by their mean over each stamp (last two axes), so the weighted MSE of a
    stamp is on the scale of a plain MSE whatever the sky fraction and sky weight; a stamp whose weights
    are all 0 stays 0.

    Args:
        sky: ``(..., H, W)`` bool, True on sky (numpy array or tensor).
        sky_weight: weight of a sky pixel relative to a source pixel.
        valid: optional ``(..., H, W)`` bool, False where no band has data (weight 0 there).

    Returns:
        float32 weights of the same type and shape as ``sky``.
    """
    if isinstance(sky, Tensor):
        w = torch.where(sky.bool(), sky_weight, 1.0).to(torch.float32)
        if valid is not None:
            w = w * valid.to(w.device, torch.float32)
        mean = w.mean(dim=(-2, -1), keepdim=True)
        return torch.where(mean > 0, w / mean.clamp_min(1e-12), torch.zeros_like(w))
    w = np.where(np.asarray(sky, dtype=bool), np.float32(sky_weight), np.float32(1.0)).astype(np.float32)
    if valid is not None:
        w = w * np.asarray(valid, dtype=np.float32)
    mean = w.mean(axis=(-2, -1), keepdims=True)
    return np.where(mean > 0, w / np.maximum(mean, 1e-12), 0.0).astype(np.float32)


def positive_flux_weights(images: Tensor, sky_weight: float = 0.0) -> Tensor:
    """The original study's rule: weight 0 (or ``sky_weight``) where the flux is <= 0, else 1; mean 1.

    The original worked on one band; for several bands a pixel counts as non-positive when the band sum
    is <= 0 (on pure sky that is half the pixels, as the single-band rule was).

    Args:
        images: ``(N, B, H, W)`` raw flux.
        sky_weight: weight given to the non-positive pixels before normalisation.

    Returns:
        ``(N, 1, H, W)`` float32 weights with mean 1 per stamp.
    """
    return sky_pixel_weights(images.sum(dim=1, keepdim=True) <= 0, sky_weight)


def pixel_weights(images: Tensor, mask: Tensor | None, config: MaskConfig) -> Tensor:
    """The per-batch loss weights for the configured rule.

    Args:
        images: ``(N, B, H, W)`` raw flux (used by the positive rule; gives device and shape).
        mask: the cached segmentation weights ``(N, H, W)`` or ``(N, 1, H, W)`` from the store field
            returned by :func:`ensure_sky_masks` (required for the segmentation rule, else ignored).
        config: the rule.

    Returns:
        ``(N, 1, H, W)`` float32 weights on the images' device.
    """
    n, _, h, w = images.shape
    if config.rule == "segmentation":
        if mask is None:
            raise GalmocoError("the segmentation mask rule needs the cached masks: call ensure_sky_masks() "
                               "and load its field with the dataset")
        return mask.reshape(n, 1, h, w).to(images.device, torch.float32)
    if config.rule == "positive":
        return positive_flux_weights(images)
    return torch.ones(n, 1, h, w, device=images.device)


def _block_weights(args: tuple[np.ndarray, np.ndarray | None, MaskConfig]) -> np.ndarray:
    """Segmentation loss weights ``(n, H, W)`` for a block of stamps (runs in worker processes)."""
    images, weights, config = args
    out = np.empty((images.shape[0],) + images.shape[2:], dtype=np.float32)
    for i in range(images.shape[0]):
        weight = None if weights is None else weights[i]
        sky = segmentation_sky(images[i], weight, config)
        valid = None if weight is None else (weight > 0).any(axis=0)
        out[i] = sky_pixel_weights(sky, config.sky_weight, valid)
    return out


def _blocks(h5: h5py.File, block: int, config: MaskConfig) -> Iterator[tuple]:
    n = h5["images"].shape[0]
    for start in range(0, n, block):
        stop = min(n, start + block)
        weights = h5["weights"][start:stop] if "weights" in h5 else None
        yield h5["images"][start:stop], weights, config


def _compute(blocks: Iterable[tuple], workers: int) -> Iterator[np.ndarray]:
    """:func:`_block_weights` of each block in order; with workers, at most ``2 * workers`` blocks in flight
    (``Executor.map`` would read the whole store ahead)."""
    if workers <= 1:
        yield from map(_block_weights, blocks)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: deque = deque()
        for args in blocks:
            pending.append(pool.submit(_block_weights, args))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _write_sky_masks(h5: h5py.File, path: Path, name: str, config: MaskConfig, workers: int,
                     block: int) -> None:
    """Compute every object's sky-mask weights into ``name``, under a temporary name renamed when complete.

    Args:
        h5: the store, open for appending.
        path: its path, for messages.
        name: the dataset to write, ``"masks/<key>"`` (:func:`mask_key`).
        config: the mask rule and its parameters (stored as the dataset's attributes).
        workers: processes for sep (1: in this process).
        block: objects per read/write.

    Raises:
        GalmocoError: when the file is not a galmoco store, or an incomplete one.
    """
    if "images" not in h5:
        raise GalmocoError(f"{path}: not a galmoco store (no /images dataset)")
    if not h5.attrs.get("complete", True):
        raise GalmocoError(f"{path}: the store is incomplete (packing was interrupted); pack it again")
    n, _, h, w = h5["images"].shape
    group = h5.require_group("masks")
    tmp = f"{name.split('/', 1)[1]}.partial"
    if tmp in group:
        del group[tmp]  # left by an interrupted run
    dset = group.create_dataset(tmp, shape=(n, h, w), dtype="float32", chunks=(1, h, w) if n else None)
    for key, value in vars(config).items():
        dset.attrs[key] = value
    with tqdm(total=n, desc="sky masks", unit="obj", disable=None) as bar:
        start = 0
        for result in _compute(_blocks(h5, block, config), workers):
            dset[start:start + len(result)] = result
            start += len(result)
            bar.update(len(result))
    group.move(tmp, name.split("/", 1)[1])
    h5.flush()


def ensure_sky_masks(store_path: str | Path, config: MaskConfig, workers: int = 1,
                     block: int = 256, wait_s: float | None = None) -> str | None:
    """Compute the segmentation loss weights of every object once and cache them in the store.

    The weights (:func:`sky_pixel_weights` of :func:`segmentation_sky`, 0 where no band has data) go to
    the dataset ``masks/<key>`` ``(N, H, W)`` float32, chunked per object, with the parameters as
    attributes; ``<key>`` encodes the parameters (:func:`mask_key`), so another setting gets its own
    cache. Written under a temporary name and renamed when complete, so an interrupted run leaves no
    half-written mask (the next call starts over). A second call finds the cache and returns at once.
    Runs sharing a store coordinate through HDF5's file lock: a call while another process writes the
    store (e.g. caches the same masks) waits for it (:func:`~galmoco.io.store.open_hdf5`), then finds the
    cache or computes it; it cannot write while another process reads the store, and waits for that too.

    Args:
        store_path: the packed store (opened for appending once the cache is found missing).
        config: the mask rule and its parameters.
        workers: processes for sep (1: in this process).
        block: objects per read/write.
        wait_s: seconds to wait at most for another process holding the store; None:
            :data:`galmoco.io.store.LOCK_WAIT_S`.

    Returns:
        ``"masks/<key>"``, the field name for ``galmoco.io.store.CutoutDataset(fields=...)``; None for the
        ``"positive"`` and ``"none"`` rules, which are computed on the fly by :func:`pixel_weights`.
    """
    if config.rule != "segmentation":
        return None
    path = Path(store_path)
    name = mask_key(config)
    if not path.is_file():
        raise GalmocoError(f"{path}: no such store")
    # read-only first: runs sharing a store must not fight for a write lock
    with open_hdf5(path, "r", wait_s) as h5:
        if name in h5:
            return name
    try:
        h5 = open_hdf5(path, "a", wait_s)
    except GalmocoError as exc:
        raise GalmocoError(f"cannot cache the sky masks: {exc}; or cache them before starting runs "
                           "that share the store") from None
    with h5:
        if name not in h5:
            _write_sky_masks(h5, path, name, config, workers, block)
    return name

