"""End-of-epoch monitoring: kNN accuracy on the held-out split and a reconstruction grid in TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from galmoco.config import TrainConfig
from galmoco.io.store import CutoutDataset, CutoutStore
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.build import DataPlan
from galmoco.train.knn import compute_latents, knn_accuracy

__all__ = ["KNN_BANK_MAX", "knn_monitor", "log_reconstructions"]

#: at most this many training latents form the kNN monitor's reference bank
KNN_BANK_MAX = 10_000


def knn_monitor(model: GalaxyModel, config: TrainConfig, plan: DataPlan, store_path: Path,
                device: torch.device) -> float | str:
    """kNN accuracy of the held-out split's labels against a bank of (at most :data:`KNN_BANK_MAX`)
    training latents; ``""`` without labels or held-out objects."""
    if plan.labels is None or not len(plan.val_idx):
        return ""
    load = {"batch_size": max(256, config.batch_size), "num_workers": config.num_workers}
    bank_idx = plan.train_idx[np.random.default_rng(config.seed).permutation(len(plan.train_idx))]
    bank_idx = np.sort(bank_idx[:KNN_BANK_MAX])

    def latents(idx: np.ndarray) -> torch.Tensor:
        loader = DataLoader(CutoutDataset(store_path, idx, ("image",)), **load)
        return compute_latents(model, loader, device)

    bank, val = latents(bank_idx), latents(plan.val_idx)
    labels = torch.as_tensor(plan.labels, device=device)
    return knn_accuracy(bank, labels[torch.as_tensor(bank_idx, device=device)], val,
                        labels[torch.as_tensor(plan.val_idx, device=device)])


def log_reconstructions(model: GalaxyModel, plan: DataPlan, store_path: Path, device: torch.device,
                        writer: Any, epoch: int) -> None:
    """Eight stamps (held-out ones when there are) over their reconstructions, band-averaged, as one
    TensorBoard image; nothing for a model without a decoder."""
    if model.decoder is None:
        return
    from torchvision.utils import make_grid

    show = plan.val_idx if len(plan.val_idx) else plan.train_idx
    with CutoutStore(store_path) as store:
        images = torch.from_numpy(store.read_batch(show[:8])).to(device)
    was = model.training
    model.eval()
    with torch.no_grad():
        pair = torch.cat([model.normalize(images), model.reconstruct(images)]).mean(1, keepdim=True)
    model.train(was)
    # each output is shown on the colour scale of its input, so over/undershoots stay visible
    target = pair[: len(images)]
    lo = target.amin(dim=(1, 2, 3), keepdim=True).repeat(2, 1, 1, 1)
    hi = target.amax(dim=(1, 2, 3), keepdim=True).repeat(2, 1, 1, 1)
    pair = pair.clamp(lo, hi)
    writer.add_image("reconstruction (top: input, bottom: output)",
                     make_grid(((pair - lo) / (hi - lo + 1e-8)).cpu(), nrow=len(images)), epoch)
