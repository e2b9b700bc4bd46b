"""Training objectives: one small module per objective, ``forward(batch) -> dict of losses``.

Each objective owns the :class:`~galmoco.models.GalaxyModel` (as ``self.model``) plus whatever
training-only state it needs (MoCo's key encoder and queue). The loop calls ``forward`` and
back-propagates ``out["loss"]``; everything in the returned dict is logged. New objectives (InsDis,
CMC) subclass :class:`Objective` and register in :data:`OBJECTIVE_CLASSES`.

Design (see docs/train.md):
- ``ae``: encode and decode the un-augmented stamp; masked MSE against its normalised self.
- ``moco``: InfoNCE between the projected latents of two augmented views (He et al. 2020), keys from
  the momentum encoder, negatives from the queue, split-BN + key shuffle on one device.
- ``moco-ae``: ``alpha * InfoNCE + beta * masked MSE(decode(latent(query view)), target)``. The
  target is the stamp as the query view shows it (its flip, rotation and shift, not its noise, blur
  or flux changes; ``recon_target: stored``: the stored stamp, see :class:`MocoAEObjective`).

With ``mix.method`` set (Un-Mix, Shen et al. 2022; :mod:`galmoco.data.mixing`) the contrastive
objectives mix their query view (normalised) within the batch and score it with the soft-target
InfoNCE (:func:`~galmoco.losses.soft_info_nce`): the mixed query's positives are its sources' keys (or
bank entries) weighted by their shares; ``moco-ae``'s decoder draws the same mixture of its targets.

With ``model.frame: d4`` every encoder input (query, key, ``ae``'s stamp) is in its canonical D4 frame
and every drawing is turned back by its target's frame (:class:`~galmoco.models.GalaxyModel`).
"""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galmoco.config import TrainConfig
from galmoco.data.augment import AugmentParams, GalaxyAugment
from galmoco.data.masks import pixel_weights
from galmoco.data.mixing import (
    Mixing,
    apply_mixing,
    centre_importance,
    mix_pixel_weights,
    sample_mixing,
    soft_targets,
)
from galmoco.distributed import RankBatchShuffle, concat_all_gather, is_distributed
from galmoco.losses import info_nce, key_similarity, masked_mse, nce_loss, soft_info_nce, softmax_ce
from galmoco.models.galaxy import GalaxyModel
from galmoco.models.memory_bank import MultiViewNCE
from galmoco.models.moco import BatchShuffle, KeyQueue, LocalBatchShuffle, MomentumEncoder, convert_split_bn

__all__ = ["OBJECTIVE_CLASSES", "AEObjective", "CMCObjective", "InsDisObjective", "MemoryBankObjective",
           "MocoAEObjective", "MocoObjective", "Objective", "build_objective"]


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

    def mix_query(self, x: torch.Tensor) -> tuple[torch.Tensor, Mixing | None]:
        """The normalised query images ``x`` mixed as ``config.mix`` draws (unchanged, and nothing drawn,
        when the mixture is off), with the :class:`~galmoco.data.mixing.Mixing` (``None`` when off)."""
        mixing = sample_mixing(x.shape[0], tuple(x.shape[-2:]), self.config.mix, x.device, self.generator)
        return (x, None) if mixing is None else (apply_mixing(x, mixing), mixing)

    def mix_targets(self, mixing: Mixing) -> torch.Tensor:
        """``(N, N)`` soft targets of a mixed batch (each source's centre-weighted share)."""
        size = tuple(mixing.coefficients.shape[-2:])
        return soft_targets(mixing, centre_importance(size, self.config.mix.centre_sigma))

    def reconstruction_loss(self, latent: torch.Tensor, batch: dict[str, torch.Tensor],
                            geometry: AugmentParams | None = None,
                            mixing: Mixing | None = None, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Masked MSE of ``decode(latent)`` against the normalised stamps of ``batch``: as stored, or moved
        by ``geometry`` (a view's flip/rotation/shift, without its photometric changes), masks alike;
        with ``mixing``, the same mixture of the targets (and of their pixel weights) as the query's.
        ``frame`` turns the drawing back (default: the target's own :meth:`GalaxyModel.frame`); with
        ``model.frame: o2`` the query view's frame, the one its latent was read in, is passed."""
        images, mask = batch["image"], batch.get("mask")
        if geometry is not None:
            images = self.augment.apply_geometry(images, geometry)
            if mask is not None:
                mask = self.augment.apply_geometry(mask[:, None], geometry)[:, 0]
        target = self.model.normalize(images)
        weights = pixel_weights(images, mask, self.config.mask)
        if mixing is not None:
            target, weights = apply_mixing(target, mixing), mix_pixel_weights(weights, mixing)
        # the decoder draws in the encoder's frame; the target's own frame turns the drawing back
        frame = self.model.frame(target) if frame is None else frame
        return masked_mse(self.model.decode(latent, frame), target, weights)

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
        x = self.model.normalize(batch["image"])
        frame = self.model.frame(x)
        recon = self.reconstruction_loss(self.model.encode_normalized(x, frame), batch, frame=frame)
        return {"loss": recon, "loss_recon": recon}


class MocoObjective(Objective):
    """MoCo v1/v2: query = head(encoder(view 1)), key = momentum copy on view 2, negatives from the queue;
    with ``moco.symmetric`` also view 2's query against view 1's key (MoCo v3), the two terms averaged.

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
        self.queue = KeyQueue(config.model.head_dim, queue_size, generator=init)
        if shuffler is None and mc.shuffle_bn:
            shuffler = RankBatchShuffle() if is_distributed() else LocalBatchShuffle(generator)
        self.shuffler = shuffler

    def train(self, mode: bool = True) -> MocoObjective:
        """As ``nn.Module.train``, but the key encoder always stays in train mode (batch statistics)."""
        super().train(mode)
        self.key_encoder.train()
        return self

    def contrastive(self, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, AugmentParams, Mixing | None, torch.Tensor | None]:
        """InfoNCE of the batch (enqueues its keys), the query view's latent, the query view's draws, the
        query's mixture (``None`` without ``mix``) and the frame the query was read in."""
        images = batch["image"]
        # both views in one batched call: independent draws per row, half the per-call overhead; the
        # copies differ in seeing and noise first (GalaxyAugment.pair), as two observations do
        views, params = self.augment.views(images, self.generator)
        n = images.shape[0]
        q_params = replace(params, **{f.name: getattr(params, f.name)[:n] for f in fields(params)
                                      if getattr(params, f.name) is not None})
        q_view, k_view = self.model.normalize(views).chunk(2)
        unmixed_q_view = q_view
        q_view, mixing = self.mix_query(q_view)
        q_frame = self.model.frame(q_view)
        latent = self.model.encode_normalized(q_view, q_frame)
        q = self.model.head(latent)
        mc, similarity = self.config.moco, self.config.moco_similarity()
        temperature = self.config.moco_temperature()
        with torch.no_grad():
            self.key_encoder.update(nn.Sequential(self.model.encoder, self.model.head))
            k = self.keys(k_view)
        queue = self.queue.negatives()
        if mixing is None:
            loss = info_nce(q, k, queue, temperature, similarity)
        else:  # the mixed query's positives: its sources' keys (this rank's batch), by their shares
            loss = soft_info_nce(key_similarity(q, k, similarity) / temperature,
                                 key_similarity(q, queue, similarity) / temperature,
                                 self.mix_targets(mixing))
        if mc.symmetric:  # MoCo v3: the key view queries too, against the (unmixed) query view's key
            with torch.no_grad():
                k_reverse = self.keys(unmixed_q_view)
            q_reverse = self.model.head(self.model.encode_normalized(k_view))
            loss = (loss + info_nce(q_reverse, k_reverse, queue, temperature, similarity)) / 2
        self.queue.enqueue(concat_all_gather(k))  # every rank's keys, in rank order: identical queues
        return loss, latent, q_params, mixing, q_frame

    def keys(self, views: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's keys of normalised views (in its frame; BN-shuffled when set)."""
        views = self.model.canonicalize(views)
        if self.shuffler is None:
            return self.key_encoder(views)
        shuffled, index = self.shuffler.shuffle(views)
        return self.shuffler.unshuffle(self.key_encoder(shuffled), index)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nce = self.contrastive(batch)[0]
        return {"loss": nce, "loss_contrastive": nce}


class MocoAEObjective(MocoObjective):
    """``alpha * InfoNCE + beta * masked reconstruction``, the decoder reading the query view's latent.

    With ``recon_target="view"`` (default) the decoder draws the stamp as the query saw it (its flip,
    rotation and shift; not its noise, blur or flux changes), so the latent keeps the orientation
    that reconstruction needs while InfoNCE pulls the views together; ``beta`` sets the balance.
    With ``"stored"`` it draws the stored stamp. The decoder draws in the encoder's canonical frame and
    the target's own frame turns the drawing back (``model.frame: d4``); without a frame, a ``stored``
    target asks an orientation-free latent for the stored orientation (docs/train.md)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nce, latent, q_params, mixing, q_frame = self.contrastive(batch)
        geometry = q_params if self.config.recon_target == "view" else None
        # the pose frame of the query view also holds for its noise-free target (the same geometry);
        # the D4 frame's exact choice is taken from the target itself, as the target is drawn in it
        frame = q_frame if geometry is not None and self.model.draw_frame == "o2" else None
        recon = self.reconstruction_loss(latent, batch, geometry, mixing, frame)
        total = self.config.alpha * nce + self.config.recon_weight() * recon
        return {"loss": total, "loss_contrastive": nce, "loss_recon": recon}


class MemoryBankObjective(Objective):
    """InsDis and CMC: the embeddings of one augmented view against memory banks of every training image.

    Args:
        train_idx: sorted catalogue rows of the training split; row ``train_idx[i]`` owns bank entry ``i``.
    """

    def __init__(self, model: GalaxyModel, augment: GalaxyAugment, config: TrainConfig,
                 generator: torch.Generator, train_idx: np.ndarray) -> None:
        super().__init__(model, augment, config, generator)
        bc = config.bank
        n_views = len(getattr(model.encoder, "views", (None,)))
        dim = config.model.head_dim if model.head is not None else config.model.latent_dim // n_views
        self.contrast = MultiViewNCE(len(train_idx), dim, n_views, bc.k, bc.temperature, bc.momentum,
                                     bc.softmax, seed=config.seed)
        self.register_buffer("train_rows", torch.as_tensor(np.asarray(train_idx), dtype=torch.long),
                             persistent=False)

    def embed_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The L2-normalised embeddings ``(N, dim)`` of each view of normalised images ``x``."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.model.normalize(self.augment(batch["image"], generator=self.generator))
        x, mixing = self.mix_query(x)
        position = torch.searchsorted(self.train_rows, batch["index"].to(self.train_rows.device))
        views = self.embed_views(x)
        if mixing is not None:  # the batch's own bank entries before the update: the mixed positives
            entries = [bank.memory[position].clone() for bank in self.contrast.banks]
        scores = self.contrast(views, position)
        if mixing is None:
            n_data = self.contrast.n_data
            losses = [softmax_ce(s) if self.config.bank.softmax else nce_loss(s, n_data) for s in scores]
        else:  # softmax scores (validated): column 0 is the own entry, the rest the negatives
            targets, temperature = self.mix_targets(mixing), self.contrast.temperature
            losses = [soft_info_nce(views[i].float() @ entries[j].t() / temperature, s[:, 1:], targets)
                      for (i, j), s in zip(self.contrast.pairs, scores, strict=True)]
        loss = torch.stack(losses).sum()
        return {"loss": loss, "loss_contrastive": loss}


class InsDisObjective(MemoryBankObjective):
    """Instance discrimination (Wu et al. 2018): the projected latent against one bank."""

    def embed_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.model.head(self.model.encode_normalized(x))]


class CMCObjective(MemoryBankObjective):
    """Contrastive multiview coding (Tian et al. 2019): each band group's latent against the others' banks."""

    def embed_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(v, dim=1) for v in self.model.encoder.view_latents(self.model.canonicalize(x))]


#: objective name -> class
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "ae": AEObjective, "moco": MocoObjective, "moco-ae": MocoAEObjective, "insdis": InsDisObjective,
    "cmc": CMCObjective,
}


def build_objective(model: GalaxyModel, augment: GalaxyAugment, config: TrainConfig,
                    generator: torch.Generator, queue_size: int,
                    train_idx: np.ndarray | None = None) -> Objective:
    """The objective named by ``config.objective``, wrapping ``model``; memory-bank objectives need the
    training split's catalogue rows ``train_idx``."""
    cls = OBJECTIVE_CLASSES[config.objective]
    if issubclass(cls, MocoObjective):
        return cls(model, augment, config, generator, queue_size)
    if issubclass(cls, MemoryBankObjective):
        if train_idx is None:
            raise ValueError(f"objective {config.objective!r} needs the training split's rows (train_idx)")
        return cls(model, augment, config, generator, train_idx)
    return cls(model, augment, config, generator)
