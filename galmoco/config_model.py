"""The model's configuration: the network's shape (:class:`ModelConfig`) and what an inference model is
built from (:class:`GalaxyModelConfig`). :mod:`galmoco.config` composes them into a run's
:class:`~galmoco.config.TrainConfig` and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from galmoco.data.normalize import NormalizeConfig
from galmoco.surveys import DES_PIXEL_SCALE, DES_PSF_FWHM

__all__ = ["GalaxyModelConfig", "ModelConfig"]


@dataclass
class ModelConfig:
    """Network shape.

    Attributes:
        arch: ``"conv"`` (small, CPU-friendly), ``"resnet18"`` or ``"resnet50"`` (3x3 stem, no max-pool).
        latent_dim: size of the latent vector that ``embed`` writes.
        widths: channels of the conv encoder's stride-2 stages (mirrored by the decoder, also for the
            ResNets); a stamp side that ``2 ** len(widths)`` does not divide is decoded on the next
            multiple up and centre-cropped.
        pool: side of the map the conv encoder average-pools its last stage to: 4, where the light is
            survives (the best reconstruction); 1, global average pooling, only what the channels
            encode (docs/train.md: without a frame its latent learns the flips less well).
        head: projection head: ``"identity"`` (default: InfoNCE on the latent itself, the space
            placement reads; docs/train.md measures it), ``"linear"`` (MoCo v1) or ``"mlp"`` (v2).
        proj_dim: output size of the projection head; ``None``: ``latent_dim`` (:attr:`head_dim`).
        photometry: add a linear map of the stamp's aperture fluxes to the latent
            (``galmoco.models.photometry``: what identifies a star or a compact galaxy when the seeing
            changes; not with ``cmc``, whose views must not share the colours). ``None``
            (:attr:`has_photometry`): on in a frame, off without one. Its discs are centred on the
            stamp, so this part of the latent is exactly unchanged by the flips and quarter turns: an
            untrained network with it already ranks every flipped copy first (docs/train.md), and
            without a frame, the study's setting, the invariance is meant to be learned.
        frame: the frame the encoder reads each stamp in and the decoder draws in: ``"o2"``, its pose
            frame (``galmoco.models.pose``: the same latent, up to interpolation and noise, for turns by
            any angle, flips and shifts); ``"d4"``, its canonical D4 frame (``galmoco.models.canonical``:
            exact for flips and quarter turns); ``"none"``, as given (invariance is learned).
        draw_frame: the frame the decoder draws in (:attr:`decoder_frame`); ``None``: the encoder's
            ``frame``, and ``"o2"`` without one. Only ``frame: none`` may set another. With ``none``
            and ``o2`` the encoder reads the stamp as given and the decoder draws in the stamp's pose
            frame, so the orientation reaches the drawing without passing through the latent: an
            invariant content vector plus a pose (docs/train.md measures it against drawing as given).
        compact_size: with ``frame: o2``, objects smaller than this many pixels (windowed RMS radius,
            :func:`galmoco.models.pose.compact_scale`) reach the encoder magnified to it, and the drawing
            is shrunk back: a star then looks nearly the same to the encoder under any seeing. About 1.2
            times a star's size at the survey's median seeing; ``None`` (:attr:`compact_radius`): half
            the DES r-band PSF FWHM in pixels (1.81) with ``frame: o2``, off otherwise; 0: off.
    """

    arch: str = "conv"
    latent_dim: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 128)
    pool: int = 4
    head: str = "identity"
    proj_dim: int | None = None
    frame: str = "o2"
    draw_frame: str | None = None
    photometry: bool | None = None
    compact_size: float | None = None

    @property
    def has_photometry(self) -> bool:
        """Whether the latent has the photometric part: ``photometry``, or by default in a frame only."""
        return self.frame != "none" if self.photometry is None else self.photometry

    @property
    def compact_radius(self) -> float:
        """The size compact objects are magnified to in the pose frame, in pixels (0: none):
        ``compact_size``, or by default half the DES r-band PSF FWHM with ``frame: o2``."""
        if self.compact_size is not None:
            return float(self.compact_size)
        return DES_PSF_FWHM["r"] / DES_PIXEL_SCALE / 2 if self.frame == "o2" else 0.0

    @property
    def decoder_frame(self) -> str:
        """The frame the decoder draws in: ``draw_frame``, or by default the encoder's ``frame``, and the
        pose frame (``"o2"``) when the encoder has none."""
        if self.draw_frame is not None:
            return self.draw_frame
        return "o2" if self.frame == "none" else self.frame

    @property
    def head_dim(self) -> int:
        """Size of the head's output (the InfoNCE space): ``proj_dim``, or ``latent_dim`` when unset."""
        return self.latent_dim if self.proj_dim is None else self.proj_dim


@dataclass
class GalaxyModelConfig:
    """What :class:`~galmoco.models.GalaxyModel` is built from: the network, the flux normalisation and
    which parts it has. No optimiser, augmentation or data settings, so an inference model is built
    from this alone; a run's is :meth:`TrainConfig.model_config` (also for checkpoints, which hold the
    full TrainConfig).

    Attributes:
        model: the network's shape.
        normalize: raw flux to network input.
        projects: whether there is a projection head (MoCo's objectives and ``insdis``).
        reconstructs: whether there is a decoder (``ae``, ``moco-ae``).
        views: ``cmc``'s band groups (``"gr,iz"``): one encoder per group, latents concatenated;
            ``None``: one encoder reading every band.
        objective: the objective the model was trained with, for messages (``None``: not known).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    projects: bool = False
    reconstructs: bool = True
    views: str | None = None
    objective: str | None = None
