"""GalaxyModel: the trained network as the rest of galmoco sees it (normalise, encode, project, decode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from galmoco.config import GalaxyModelConfig, TrainConfig
from galmoco.data.normalize import Normalizer
from galmoco.data.transforms import apply_symmetry_index
from galmoco.errors import GalmocoError
from galmoco.models.canonical import canonical_frame, from_canonical
from galmoco.models.cmc import CMCEncoder, parse_views
from galmoco.models.decoders import ConvDecoder
from galmoco.models.encoders import build_encoder
from galmoco.models.heads import ProjectionHead
from galmoco.models.photometry import PhotometricEncoder
from galmoco.models.pose import compact_scale, from_pose_frame, pose_frame, scale_pose_frame, to_pose_frame

__all__ = ["GalaxyModel"]


class GalaxyModel(nn.Module):
    """Normaliser, encoder, and (as the config says) projection head and decoder.

    The key encoder and queue of MoCo are training state and live in the objective
    (``galmoco.train.objectives``), not here: this module is what ``embed`` and the analyses load.

    Args:
        config: the model's configuration; a run's full TrainConfig is reduced to its
            :meth:`~galmoco.config.TrainConfig.model_config`.
        bands: band names of the store, e.g. ``("g", "r", "i", "z")``.
        image_size: stamp side in pixels.
        sky_sigma: per-band sky noise in flux units (the normaliser's softening scale).

    Attributes:
        config (a :class:`~galmoco.config.GalaxyModelConfig`), bands, image_size, latent_dim; ``head``
        and ``decoder`` are ``None`` when the config has no projection head / decoder.
    """

    def __init__(self, config: GalaxyModelConfig | TrainConfig, bands: Sequence[str], image_size: int,
                 sky_sigma: Sequence[float]) -> None:
        super().__init__()
        if isinstance(config, TrainConfig):
            config = config.model_config()
        self.config = config
        self.bands = tuple(bands)
        self.image_size = int(image_size)
        self.latent_dim = config.model.latent_dim
        m = config.model
        n_bands = len(self.bands)
        self.normalizer = Normalizer(config.normalize, np.asarray(sky_sigma, dtype=np.float32))
        if config.views is not None:  # one encoder per band group (cmc); the latent is their concatenation
            views = parse_views(config.views, self.bands)
            self.encoder: nn.Module = CMCEncoder(
                views, lambda c: build_encoder(m.arch, c, m.latent_dim // len(views), m.widths, m.pool))
        else:
            self.encoder = build_encoder(m.arch, n_bands, m.latent_dim, m.widths, m.pool)
            if m.has_photometry:  # not for cmc, whose views must not share the colours
                self.encoder = PhotometricEncoder(self.encoder, self.normalizer, m.latent_dim,
                                                  self.image_size)
        self.head = ProjectionHead(m.latent_dim, m.head_dim, m.head) if config.projects else None
        self.decoder = (ConvDecoder(n_bands, m.latent_dim, m.widths, self.image_size)
                        if config.reconstructs else None)

    def _described(self) -> str:
        objective = self.config.objective
        return f"a model trained with objective {objective!r}" if objective else "this model"

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Raw store images ``(N, B, H, W)`` (flux units) to the network's input space."""
        return self.normalizer(images)

    @property
    def draw_frame(self) -> str:
        """The frame the decoder draws in (:attr:`~galmoco.config.ModelConfig.decoder_frame`)."""
        return self.config.model.decoder_frame

    def canonicalize(self, x: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised stamps in the frame the encoder reads: their canonical D4 frame with
        ``model.frame: d4`` (``galmoco.models.canonical``), their pose frame (any angle, flips, centroid)
        with ``o2`` (``galmoco.models.pose``), unchanged with ``none``.

        Args:
            x: ``(N, B, H, W)`` normalised stamps.
            frame: their :meth:`frame` when already computed.
        """
        kind = self.config.model.frame
        if kind == "none":
            return x
        frame = self.frame(x) if frame is None else frame
        return apply_symmetry_index(x, frame) if kind == "d4" else to_pose_frame(x, frame)[0]

    def frame(self, x: torch.Tensor) -> torch.Tensor | None:
        """What takes each normalised stamp to the frame the decoder draws in (:attr:`draw_frame`, which
        is also the encoder's unless ``model.frame`` is ``none``): a D4 element ``(N,)`` int64 for
        ``d4``, an affine map ``(N, 2, 3)`` for ``o2`` (which also magnifies compact objects, with
        ``model.compact_size``), ``None`` for ``none``; :meth:`decode` undoes it."""
        kind = self.draw_frame
        if kind == "none":
            return None
        if kind == "d4":
            return canonical_frame(x)
        affine = pose_frame(x)
        size = self.config.model.compact_radius
        if not size:
            return affine
        # each band in units of its sky noise, so that the size is read where the signal is
        flux = self.normalizer.in_sky_sigmas(x.float()).sum(dim=1)
        return scale_pose_frame(affine, compact_scale(flux, affine, size))

    def encode_normalized(self, x: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised stamps ``(N, B, H, W)`` to latent vectors ``(N, latent_dim)`` (``frame``: their
        :meth:`frame` when already computed)."""
        return self.encoder(self.canonicalize(x, frame))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw store images ``(N, B, H, W)`` to latent vectors ``(N, latent_dim)``."""
        return self.encode_normalized(self.normalize(images))

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        """The projection head's L2-normalised output for latents ``(N, latent_dim)``.

        Raises:
            GalmocoError: when the objective had no projection head (``ae``, ``cmc``).
        """
        if self.head is None:
            raise GalmocoError(f"{self._described()} has no projection head")
        return self.head(latent)

    def decode(self, latent: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(N, latent_dim)`` to images ``(N, B, H, W)`` in the normalised space.

        Args:
            latent: from :meth:`encode`.
            frame: from :meth:`frame` of the stamps to draw: the decoder draws in the canonical frame
                and this turns each drawing back (``None``: as drawn).

        Raises:
            GalmocoError: when the objective had no decoder (``moco``).
        """
        if self.decoder is None:
            raise GalmocoError(f"{self._described()} has no decoder")
        drawn = self.decoder(latent)
        if frame is None:
            return drawn
        if self.draw_frame == "d4":
            return from_canonical(drawn, frame)
        return from_pose_frame(drawn, frame)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Raw store images to their reconstruction in the normalised space (compare with ``normalize``)."""
        x = self.normalize(images)
        frame = self.frame(x)
        return self.decode(self.encode_normalized(x, frame), frame)
