"""What a training run is made of before its first step: the data split and the trained parts.

:func:`prepare_data` reads the store (shape, labels), estimates the sky noise, caches sky masks,
splits off the kNN monitor's held-out objects and sizes the MoCo queue; :func:`build_parts` makes
the model, augmentation, objective, optimiser and learning-rate schedule from a configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmoco.config import TrainConfig, auto_queue_size
from galmoco.data.augment import GalaxyAugment
from galmoco.data.masks import ensure_sky_masks
from galmoco.data.normalize import estimate_store_sky_sigma
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import set_rng_state
from galmoco.train.knn import encode_labels
from galmoco.train.objectives import Objective, build_objective

__all__ = ["DataPlan", "Parts", "build_parts", "lr_factor", "prepare_data", "restore_parts",
           "seed_everything", "split_indices"]

log = logging.getLogger(__name__)


@dataclass
class DataPlan:
    """What the store gives a run.

    Attributes:
        bands: the store's bands (``"griz"``); image_size: stamp side (pixels); labels: class codes of
        the kNN monitor's label column (``None`` without one); train_idx, val_idx: catalogue rows of
        the training and held-out splits; queue_size: MoCo queue length; fields: the store fields a
        batch reads (the image, and the cached sky mask when the objective reconstructs);
        global_batch: images per step over all processes.
    """

    bands: str
    image_size: int
    labels: np.ndarray | None
    train_idx: np.ndarray
    val_idx: np.ndarray
    queue_size: int
    fields: tuple[str, ...]
    global_batch: int


@dataclass
class Parts:
    """The trained and stepping parts of a run: the objective (holding the model), the optimiser,
    the learning-rate schedule and the augmentation generator (on the training device)."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/held-out split of ``range(n)``, both sorted; ``val_fraction=0``: none held out."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def lr_factor(step: int, total_steps: int, warmup_steps: int, cosine: bool) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up over ``warmup_steps``, then
    cosine decay to 0 (MoCo v2) or x0.1 at 60% and x0.01 at 80% of ``total_steps`` (MoCo v1's steps)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cosine:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(step >= m * total_steps for m in (0.6, 0.8))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds third-party code that uses the global RNG)
    random.seed(seed)


def prepare_data(config: TrainConfig, store_path: Path, world: int = 1) -> tuple[TrainConfig, DataPlan]:
    """Read the store's shape and labels, estimate the sky noise, cache sky masks, split, size the queue
    (for the global batch of ``world`` processes).

    Returns:
        The config with ``sky_sigma`` filled in, and the :class:`DataPlan`.

    Raises:
        GalmocoError: non-square stamps, or fewer training objects than one global batch.
    """
    with CutoutStore(store_path) as store:
        n, bands, shape, catalog = len(store), store.bands, store.shape, store.catalog
    if shape[1] != shape[2]:
        raise GalmocoError(f"{store_path}: stamps are {shape[1]}x{shape[2]}; training needs square stamps")
    if config.sky_sigma is None:
        config = dataclasses.replace(
            config, sky_sigma=tuple(float(s) for s in estimate_store_sky_sigma(store_path, seed=config.seed)))
    labels = None
    if config.label_column and config.label_column in catalog.colnames:
        labels = encode_labels(np.asarray(catalog[config.label_column]))
    train_idx, val_idx = split_indices(n, config.val_fraction if labels is not None else 0.0, config.seed)
    global_batch = config.batch_size * world
    if len(train_idx) < global_batch:
        raise GalmocoError(f"{store_path}: {len(train_idx)} training objects, fewer than one batch "
                           f"(batch_size {config.batch_size}{f' x {world} processes' if world > 1 else ''}); "
                           "lower --batch-size")
    queue_size = config.moco.queue_size or auto_queue_size(len(train_idx), global_batch)
    if config.contrastive and queue_size >= 0.5 * len(train_idx):
        log.warning("queue size %d is not much smaller than the %d training objects: positives will often "
                    "sit in the queue as negatives; use a larger dataset or --queue-size", queue_size,
                    len(train_idx))
    mask_field = ensure_sky_masks(store_path, config.mask) if config.reconstructs else None
    fields = ("image",) + ((mask_field,) if mask_field else ())
    return config, DataPlan("".join(bands), shape[1], labels, train_idx, val_idx, queue_size, fields,
                            global_batch)


def build_parts(config: TrainConfig, plan: DataPlan, device: torch.device, steps_per_epoch: int) -> Parts:
    """Seed, then build the model, objective, optimiser (AdamW, or SGD with momentum 0.9 as MoCo) and
    the per-step schedule (:func:`lr_factor`) of a run on ``device``."""
    seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model = GalaxyModel(config.model_config(), tuple(plan.bands), plan.image_size, config.sky_sigma)
    augment = GalaxyAugment(config.augment_config(), config.sky_sigma)
    objective = build_objective(model, augment, config, generator, plan.queue_size, plan.train_idx)
    objective.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    if config.compile:  # in place: the state-dict keys stay those of the plain modules
        for module in (model.encoder, model.decoder):
            if module is not None:
                module.compile()
    params = [p for p in objective.parameters() if p.requires_grad]
    lr = config.scaled_lr(plan.global_batch)
    optimizer: torch.optim.Optimizer
    if config.optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.optim.weight_decay)
    total = config.epochs * steps_per_epoch
    warmup = round(config.optim.warmup_epochs * steps_per_epoch)
    cosine = config.optim.cosine
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cosine))
    return Parts(objective, optimizer, scheduler, generator)


def restore_parts(parts: Parts, state: dict[str, Any]) -> None:
    """Load a checkpoint's model, objective, optimiser, schedule and random states into ``parts``."""
    parts.objective.model.load_state_dict(state["model"])
    parts.objective.load_extra_state_dict(state["objective"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], parts.generator)
