"""Training objectives: one small module per objective, ``forward(batch) -> dict of losses``.

Each objective owns the :class:`~galmoco.models.GalaxyModel` (as ``self.model``) plus whatever
training-only state it needs (MoCo's key encoder and queue). The loop calls ``forward`` and
back-propagates ``out["loss"]``; everything in the returned dict is logged. New objectives (InsDis,
CMC) subclass :class:`Objective` and register in :data:`OBJECTIVE_CLASSES`.

Design (see docs/train.md):
- ``ae``: encode and decode the un-augmented stamp; masked MSE against its normalised self.
- ``moco``: InfoNCE between the projected latents of two augmented views (He et al. 2020), keys from
  the momentum encoder, negatives from the queue, split-BN + key shuffle on one device.
- ``moco-ae``: ``alpha * InfoNCE + beta * masked MSE(decode(latent(query view)), normalised
  un-augmented stamp)``. The target is the stamp in its stored orientation: a latent made invariant
  to flips and rotations cannot know the view's orientation, so it decodes the stored one.
"""

from __future__ import annotations

import torch
from torch import nn

from galmoco.config import TrainConfig
from galmoco.data.augment import GalaxyAugment
from galmoco.data.masks import pixel_weights
from galmoco.losses import info_nce, masked_mse
from galmoco.models.galaxy import GalaxyModel
from galmoco.models.moco import BatchShuffle, KeyQueue, LocalBatchShuffle, MomentumEncoder, convert_split_bn

__all__ = ["OBJECTIVE_CLASSES", "AEObjective", "MocoAEObjective", "MocoObjective", "Objective",
           "build_objective"]


class Objective(nn.Module):
    """Base class: holds the model, the augmentation and the config.

    Args:
        model: the network being trained.
        augment: batched augmentation of raw-flux images (runs on the training device).
        config: the run's configuration.
        generator: the augmentation/shuffle random generator (on the training device).
    """

    def __init__(self, model: GalaxyModel, augment: GalaxyAugment, config: TrainConfig,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.model = model
        self.augment = augment
        self.config = config
        self.generator = generator

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses for one batch (``"image"`` raw flux ``(N,B,H,W)``, optional ``"mask"`` ``(N,H,W)``);
        ``"loss"`` is the total to minimise."""
        raise NotImplementedError

    def reconstruction_loss(self, latent: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked MSE of ``decode(latent)`` against the normalised un-augmented stamps of ``batch``."""
        images = batch["image"]
        target = self.model.normalize(images)
        weights = pixel_weights(images, batch.get("mask"), self.config.mask)
        return masked_mse(self.model.decode(latent), target, weights)

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """Training-only state (everything but ``self.model``), for the checkpoint."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("model.", "augment."))}

    def load_extra_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state_dict` saved."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("model.", "augment."))]
        if missing or unexpected:
            raise RuntimeError(f"objective state mismatch: missing {missing}, unexpected {unexpected}")


class AEObjective(Objective):
    """Reconstruction only (the autoencoder baseline)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        latent = self.model.encode(batch["image"])
        recon = self.reconstruction_loss(latent, batch)
        return {"loss": recon, "loss_recon": recon}


class MocoObjective(Objective):
    """MoCo v1/v2: query = head(encoder(view 1)), key = momentum copy on view 2, negatives from the queue.

    Args:
        n_train: training-set size, for the automatic queue size (see ``auto_queue_size``).
        shuffler: the BN shuffle; defaults to :class:`LocalBatchShuffle` with the run's generator.
    """

    def __init__(self, model: GalaxyModel, augment: GalaxyAugment, config: TrainConfig,
                 generator: torch.Generator, queue_size: int, shuffler: BatchShuffle | None = None) -> None:
        super().__init__(model, augment, config, generator)
        mc = config.moco
        if mc.shuffle_bn:
            convert_split_bn(model.encoder, mc.bn_splits)
        self.key_encoder = MomentumEncoder(nn.Sequential(model.encoder, model.head), mc.momentum,
                                           mc.key_bn_buffers)
        init = torch.Generator().manual_seed(config.seed)
        self.queue = KeyQueue(config.model.proj_dim, queue_size, generator=init)
        self.shuffler = shuffler if shuffler is not None else (
            LocalBatchShuffle(generator) if mc.shuffle_bn else None)

    def train(self, mode: bool = True) -> MocoObjective:
        """As ``nn.Module.train``, but the key encoder always stays in train mode (batch statistics)."""
        super().train(mode)
        self.key_encoder.train()
        return self

    def contrastive(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of the batch (enqueues its keys) and the query view's latent."""
        images = batch["image"]
        # both views in one batched call: independent draws per row, half the per-call overhead
        views = self.augment(torch.cat([images, images]), generator=self.generator)
        q_view, k_view = self.model.normalize(views).chunk(2)
        latent = self.model.encoder(q_view)
        q = self.model.head(latent)
        with torch.no_grad():
            self.key_encoder.update(nn.Sequential(self.model.encoder, self.model.head))
            if self.shuffler is not None:
                shuffled, index = self.shuffler.shuffle(k_view)
                k = self.shuffler.unshuffle(self.key_encoder(shuffled), index)
            else:
                k = self.key_encoder(k_view)
        loss = info_nce(q, k, self.queue.negatives(), self.config.moco.temperature)
        self.queue.enqueue(k)
        return loss, latent

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nce, _ = self.contrastive(batch)
        return {"loss": nce, "loss_contrastive": nce}


class MocoAEObjective(MocoObjective):
    """``alpha * InfoNCE + beta * masked reconstruction``, the decoder reading the query view's latent."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nce, latent = self.contrastive(batch)
        recon = self.reconstruction_loss(latent, batch)
        total = self.config.alpha * nce + self.config.beta * recon
        return {"loss": total, "loss_contrastive": nce, "loss_recon": recon}


#: objective name -> class
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "ae": AEObjective, "moco": MocoObjective, "moco-ae": MocoAEObjective,
}


def build_objective(model: GalaxyModel, augment: GalaxyAugment, config: TrainConfig,
                    generator: torch.Generator, queue_size: int) -> Objective:
    """The objective named by ``config.objective``, wrapping ``model``."""
    cls = OBJECTIVE_CLASSES[config.objective]
    if issubclass(cls, MocoObjective):
        return cls(model, augment, config, generator, queue_size)
    return cls(model, augment, config, generator)
