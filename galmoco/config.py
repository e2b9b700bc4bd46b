"""Training configuration: dataclasses with defaults, validation, and YAML load/save.

A :class:`TrainConfig` composes the model, MoCo and optimiser settings defined here with the data
layer's :class:`~galmoco.data.normalize.NormalizeConfig`, :class:`~galmoco.data.masks.MaskConfig`
and :class:`~galmoco.data.augment.AugmentConfig`, and the Un-Mix image mixture
:class:`~galmoco.data.mixing.MixConfig` (the options of ``--IM --IM_type``). The MoCo v2 switches of
the official recipe map to nested fields: ``--mlp`` is ``model.head = "mlp"``, ``--aug-plus`` is
``augment.aug_plus``, ``--cos`` is ``optim.cosine``. Only this module and the layers after ``data`` import it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from galmoco.config_choices import (
    ARCHS,
    FRAMES,
    HEADS,
    KEY_BN_BUFFERS,
    OBJECTIVES,
    OPTIMIZERS,
    RECON_TARGETS,
    SIMILARITIES,
    one_of,
)
from galmoco.config_dict import config_to_dict, config_value, dataclass_from_dict
from galmoco.config_model import GalaxyModelConfig, ModelConfig
from galmoco.data.augment import AugmentConfig
from galmoco.data.masks import MaskConfig
from galmoco.data.mixing import MixConfig
from galmoco.data.normalize import NormalizeConfig
from galmoco.errors import GalmocoError
from galmoco.files import atomic_write_text

__all__ = [
    "ARCHS",
    "DEFAULT_QUEUE_SIZE",
    "FRAMES",
    "HEADS",
    "KEY_BN_BUFFERS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "RECON_TARGETS",
    "SIMILARITIES",
    "ModelConfig",
    "BankConfig",
    "GalaxyModelConfig",
    "MixConfig",
    "MocoConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "auto_queue_size",
    "config_from_dict",
    "config_value",
    "config_to_dict",
    "load_config",
    "save_config",
]

#: queue size used when ``moco.queue_size`` is unset and the training set is large enough
DEFAULT_QUEUE_SIZE = 4096
#: batch size the base learning rate refers to (linear scaling rule, Goyal et al. 2017)
REFERENCE_BATCH = 256


@dataclass
class MocoConfig:
    """Momentum contrast settings.

    Attributes:
        queue_size: negatives in the queue; ``None`` picks ``min(4096, largest multiple of the batch
            size <= half the training set)`` so positives rarely sit in the queue as negatives.
        momentum: key encoder momentum ``m``. 0.99 (MoCo's small-data value): with the official 0.999 a
            run of a few hundred steps on a few thousand galaxies leaves the key encoder ~90% at its
            random initialisation and InfoNCE stays at chance (measured on the simulated survey); use
            0.999 for long runs on 10^5+ stamps.
        temperature: InfoNCE temperature. ``None`` (default): 0.2 (MoCo v2's value) in a frame, 0.1
            without one (:meth:`TrainConfig.moco_temperature`). On the simulated survey, 20 epochs: in a
            frame 0.07 (v1's) left the ``moco-ae`` galaxy-pixel reconstruction error 21% above the
            ``ae`` baseline's, 0.2 13%; without a frame, with the learning rate 3.2e-2 of that setting,
            0.1 brings 0.99 of the flipped copies within rank 40 on two seeds (docs/train.md). 0.07 for
            v1.
        shuffle_bn: split-BN over ``bn_splits`` sub-batches plus a shuffled key batch, so BN cannot
            leak the positive pair on one device.
        bn_splits: sub-batches of the split BN (the official single-GPU demo uses 8); the batch size
            must be a multiple of it.
        key_bn_buffers: ``"own"`` (official: the momentum update covers parameters only, the key
            encoder's BN buffers are its own) or ``"momentum"`` (BN buffers averaged too).
        similarity: how InfoNCE scores a query against a key (:func:`galmoco.losses.key_similarity`):
            ``"cosine"`` (MoCo's dot product) or ``"l1"`` (minus their L1 distance, the distance
            placement ranks by). ``None`` (default): ``"l1"`` in the pose frame (``model.frame: o2``),
            ``"cosine"`` otherwise (:meth:`TrainConfig.moco_similarity`; on the simulated survey, 20
            epochs, two seeds: the second observation at r < 20 0.93-0.94 with L1 against 0.86-0.89
            with the cosine in the pose frame; without a frame the cosine learns the flips better,
            0.93 against 0.88; docs/train.md).
        symmetric: also score the key view's query against the query view's key and average the two
            InfoNCE terms (the symmetrised loss of MoCo v3, Chen, Xie & He 2021, arXiv:2104.02057):
            twice the contrastive signal per step for a second pass of the encoders. ``True`` (the
            default: without a frame D4 rank 1 at r < 20 0.71-0.77 -> 0.88-0.89, the ``moco-ae`` step
            0.82x as fast); ``False`` is MoCo v1/v2's single direction; docs/train.md measures both.
    """

    queue_size: int | None = None
    momentum: float = 0.99
    temperature: float | None = None
    shuffle_bn: bool = True
    bn_splits: int = 8
    key_bn_buffers: str = "own"
    similarity: str | None = None
    symmetric: bool = True


@dataclass
class BankConfig:
    """Memory-bank objectives (``insdis``, ``cmc``), as CMC's ``NCEAverage`` (see docs/distributed.md).

    Attributes:
        k: negatives drawn uniformly from the bank per image (``--nce-k``; 4096 in InsDis and CMC).
        momentum: bank update ``w <- normalize(m w + (1 - m) v)`` (``--nce-m``; 0.5).
        temperature: ``T`` of the scores (``--nce-t``; 0.07).
        softmax: softmax cross-entropy over the ``k + 1`` scores (``--softmax``, which CMC's authors
            found works better) rather than NCE with a normalisation constant (``--nce``).
        views: ``cmc``'s band groups, comma-separated (``--views``), e.g. ``"gr,iz"``; each view's
            encoder has ``latent_dim / n_views`` outputs so the concatenated embedding has ``latent_dim``.
    """

    k: int = 4096
    momentum: float = 0.5
    temperature: float = 0.07
    softmax: bool = True
    views: str = "gr,iz"


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    Attributes:
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, as MoCo).
        lr: base learning rate for a batch of 256; the rate used is ``lr * batch_size / 256`` (linear
            scaling rule). ``None``: resolved by :meth:`TrainConfig.base_lr`: for AdamW 1.6e-2 in a
            frame (8e-3 at the default batch of 128; measured on the simulated survey, docs/train.md:
            against 4e-3 it lifts the learned D4 invariance without a frame and leaves the pose frame
            and reconstruction as they were) and 3.2e-2 without one (with a temperature of 0.1, where
            the invariance to flips must be learned); 0.03 for SGD (MoCo's value).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        warmup_epochs: linear warm-up from 0, in epochs (fractional allowed).
        cosine: cosine decay to 0 (MoCo v2 ``--cos``; the default: on short runs the step decay stops
            learning early); otherwise step decay x0.1 at 60% and 80% of
            the epochs (MoCo v1's 120/160 of 200).
    """

    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    cosine: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``RUN_DIR/config.yaml`` and in every checkpoint.

    Attributes:
        objective: ``"ae"``, ``"moco"`` or ``"moco-ae"``.
        alpha: weight of the InfoNCE term (moco-ae).
        beta: weight of the masked reconstruction term (moco-ae). ``None`` (default): 1.5 where InfoNCE
            scores by the L1 distance, 1.0 otherwise (:meth:`TrainConfig.recon_weight`).
        recon_target: what the moco-ae decoder draws from the query view's latent: ``"view"`` (the
            stamp with the view's flip/rotation/shift) or ``"stored"`` (the stored orientation).
        epochs: passes over the training split.
        batch_size: images per step (the last incomplete batch of an epoch is dropped).
        seed: seeds weights, data order, augmentations and the held-out split.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
        num_workers: DataLoader processes reading the store (augmentation runs on the device).
        in_memory: hold the training split's stamps (and sky masks) in memory; ``None`` does so when
            they take at most 2 GiB (``galmoco.io.store.IN_MEMORY_BYTES``), else each batch is read
            from the file.
        num_threads: CPU threads for torch during the run (restored afterwards); ``None`` keeps torch's
            default (one per core). On a busy shared machine 1 can be several times faster, because
            idle-spinning OpenMP threads then compete with other processes.
        val_fraction: held out for the kNN monitor when ``label_column`` is in the catalogue.
        label_column: catalogue column whose classes the kNN monitor predicts.
        sky_sigma: per-band sky noise (flux units); ``None`` estimates it from the store.
        amp: bf16 autocast of the forward pass on CUDA (ignored, with a warning, on CPU).
        channels_last: channels-last memory format for the model and the input images.
        compile: ``nn.Module.compile()`` the encoder and decoder (``torch.compile``).
        checkpoint_every: besides ``checkpoints/last.pt`` (every epoch), keep
            ``checkpoints/checkpoint_NNNN.pt`` after every this many epochs; 0 keeps none.
        mix: Un-Mix image mixtures of the query view (``moco``, ``moco-ae``, ``insdis``, ``cmc``), see
            :mod:`galmoco.data.mixing`.
    """

    objective: str = "moco-ae"
    alpha: float = 1.0
    beta: float | None = None
    recon_target: str = "view"
    epochs: int = 50
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    in_memory: bool | None = None
    num_threads: int | None = None
    val_fraction: float = 0.1
    label_column: str = "class"
    sky_sigma: tuple[float, ...] | None = None
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix: MixConfig = field(default_factory=MixConfig)

    @property
    def contrastive(self) -> bool:
        """Whether the objective has an InfoNCE term (and so a head, key encoder and queue)."""
        return self.objective in ("moco", "moco-ae")

    @property
    def projects(self) -> bool:
        """Whether the model has a projection head (MoCo's objectives and ``insdis``)."""
        return self.objective in ("moco", "moco-ae", "insdis")

    @property
    def reconstructs(self) -> bool:
        """Whether the objective has a decoder."""
        return self.objective in ("ae", "moco-ae")

    def model_config(self) -> GalaxyModelConfig:
        """The model part of this configuration: the network, normalisation and the objective's heads."""
        return GalaxyModelConfig(model=dataclasses.replace(self.model),
                                 normalize=dataclasses.replace(self.normalize), projects=self.projects,
                                 reconstructs=self.reconstructs,
                                 views=self.bank.views if self.objective == "cmc" else None,
                                 objective=self.objective)

    def moco_similarity(self) -> str:
        """``moco.similarity`` with ``None`` resolved: ``"l1"`` in the pose frame (InfoNCE then scores
        by the distance placement reads, and the frame has taken the turns), ``"cosine"`` otherwise."""
        if self.moco.similarity is not None:
            return self.moco.similarity
        return "l1" if self.model.frame == "o2" else "cosine"

    def moco_temperature(self) -> float:
        """``moco.temperature`` with ``None`` resolved: 0.2 (MoCo v2's) in a frame, 0.1 without one,
        where the latent must learn the flips and the sharper score learns them faster (docs/train.md)."""
        if self.moco.temperature is not None:
            return self.moco.temperature
        return 0.1 if self.model.frame == "none" else 0.2

    def base_lr(self) -> float:
        """``optim.lr`` with ``None`` resolved, the learning rate for a batch of 256: for AdamW 1.6e-2
        in a frame and 3.2e-2 without one; 0.03 for SGD (MoCo's)."""
        if self.optim.lr is not None:
            return self.optim.lr
        if self.optim.optimizer != "adamw":
            return 0.03
        return 3.2e-2 if self.model.frame == "none" else 1.6e-2

    def scaled_lr(self, batch_size: int) -> float:
        """``base_lr() * batch_size / 256``: the peak rate actually used for a (global) batch."""
        return self.base_lr() * batch_size / REFERENCE_BATCH

    def recon_weight(self) -> float:
        """``beta`` with ``None`` resolved: 1.5 where InfoNCE scores by L1 (which pulls the latent harder
        than the cosine; with the extra weight reconstruction stays 7.6-10.9% above ``ae``'s on the
        simulated survey and the bright population, docs/train.md), 1.0 otherwise."""
        if self.beta is not None:
            return self.beta
        return 1.5 if self.moco_similarity() == "l1" else 1.0

    def augment_config(self) -> AugmentConfig:
        """``augment`` with ``rotate: None`` resolved: off in the pose frame (``o2`` undoes a view's turn,
        so it would only cost time and smooth the noise; docs/data.md), on for the other frames."""
        rotate = self.model.frame != "o2" if self.augment.rotate is None else self.augment.rotate
        return dataclasses.replace(self.augment, rotate=rotate)

    def validate(self) -> TrainConfig:
        """Check values; returns ``self``. Raises GalmocoError naming the option."""
        checks = [
            (self.objective in OBJECTIVES, "objective", one_of(OBJECTIVES)),
            (self.recon_target in RECON_TARGETS, "recon_target", one_of(RECON_TARGETS)),
            (self.model.arch in ARCHS, "model.arch", one_of(ARCHS)),
            (self.model.head in HEADS, "model.head", one_of(HEADS)),
            (self.model.frame in FRAMES, "model.frame", one_of(FRAMES)),
            (self.model.draw_frame in (None, self.model.frame) or self.model.frame == "none"
             and self.model.draw_frame in FRAMES, "model.draw_frame",
             one_of(FRAMES) if self.model.frame == "none" else
             f"unset or {self.model.frame!r}, the encoder's frame (only model.frame none draws in another)"),
            (self.model.latent_dim > 0 and self.model.head_dim > 0, "model.latent_dim", "positive sizes"),
            (self.model.head != "identity" or self.model.head_dim == self.model.latent_dim, "model.proj_dim",
             "unset or model.latent_dim with model.head identity (InfoNCE on the latent itself)"),
            (len(self.model.widths) > 0, "model.widths", "at least one stage"),
            (isinstance(self.model.pool, int) and self.model.pool >= 1, "model.pool",
             "an integer, at least 1"),
            (self.model.compact_size is None or self.model.compact_size == 0
             or (self.model.frame == "o2" and self.model.compact_size > 0),
             "model.compact_size", "unset, 0 (off), or a positive size in pixels with model.frame o2"),
            (self.optim.optimizer in OPTIMIZERS, "optim.optimizer", one_of(OPTIMIZERS)),
            (self.base_lr() > 0, "optim.lr", "a positive number"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 2, "batch_size", "at least 2"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "in [0, 1)"),
            (0.0 <= self.moco.momentum < 1.0, "moco.momentum", "in [0, 1)"),
            (self.moco_temperature() > 0, "moco.temperature", "unset or positive"),
            (self.moco.key_bn_buffers in KEY_BN_BUFFERS, "moco.key_bn_buffers", one_of(KEY_BN_BUFFERS)),
            (self.moco.similarity in (None, *SIMILARITIES), "moco.similarity",
             f"unset or {one_of(SIMILARITIES)}"),
            (self.moco.queue_size is None or self.moco.queue_size >= 1, "moco.queue_size", "positive"),
            (self.num_workers >= 0, "num_workers", "0 or more"),
            (self.num_threads is None or self.num_threads >= 1, "num_threads", "at least 1"),
            (self.checkpoint_every >= 0, "checkpoint_every", "0 (none) or more epochs"),
            (self.bank.k >= 1, "bank.k", "at least 1"),
            (0.0 <= self.bank.momentum < 1.0, "bank.momentum", "in [0, 1)"),
            (self.bank.temperature > 0, "bank.temperature", "positive"),
            (self.objective != "cmc" or self.model.latent_dim % len(self.bank.views.split(",")) == 0,
             "model.latent_dim", f"a multiple of the number of --views ({self.bank.views})"),
        ]
        checks += [(False, f"mix.{name}", expected) for name, expected in self.mix.problems()]
        for ok, name, expected in checks:
            if not ok:
                raise GalmocoError(
                    f"config option {name}: bad value {config_value(self, name)!r}; expected {expected}")
        mixes = self.mix.method != "none"
        if mixes and (self.objective == "ae" or not (self.contrastive or self.bank.softmax)):
            raise GalmocoError(
                f"config option mix.method: {self.mix.method!r} needs a contrastive objective (moco, "
                "moco-ae, insdis, cmc) and, for insdis/cmc, bank.softmax true (the soft targets are a "
                f"softmax cross-entropy); got objective {self.objective!r}, bank.softmax {self.bank.softmax}")
        if self.contrastive and self.moco.shuffle_bn and self.batch_size % self.moco.bn_splits:
            raise GalmocoError(
                f"config option batch_size: {self.batch_size} is not a multiple of moco.bn_splits "
                f"({self.moco.bn_splits}), which split-BN needs; change one of them or set "
                "moco.shuffle_bn false"
            )
        return self


def auto_queue_size(n_train: int, batch_size: int, default: int = DEFAULT_QUEUE_SIZE) -> int:
    """The default queue size: ``min(default, largest multiple of batch_size <= n_train / 2)``, at least
    one batch.

    Args:
        n_train: training-set size (objects).
        batch_size: images per step.
        default: upper bound.
    """
    return max(batch_size, min(default, (n_train // 2 // batch_size) * batch_size))


def config_from_dict(data: dict[str, Any], cls: type = TrainConfig, where: str = "config") -> Any:
    """Build a (nested) config dataclass, by default a :class:`TrainConfig`, from a dict; missing keys
    keep their defaults (see :func:`galmoco.config_dict.dataclass_from_dict`).

    Raises:
        GalmocoError: naming unknown keys (with their dotted path) and the valid ones, or a wrong type.
    """
    return dataclass_from_dict(cls, data, where)


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted keys replaced (``{"optim.lr": 0.01}``); ``None`` values are skipped.

    Raises:
        GalmocoError: for a key that is not a config field.
    """
    data = config_to_dict(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise GalmocoError(f"unknown config option {dotted!r}")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(data, where="command-line options")


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML file written by :func:`save_config` or by hand (any subset of the keys).

    Raises:
        GalmocoError: when the file is missing, is not YAML, or has unknown keys.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise GalmocoError(f"{path}: cannot read config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise GalmocoError(f"{path}: not valid YAML: {exc}") from exc
    return config_from_dict(data or {}, where=str(path))


def save_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML, atomically; returns the path."""
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
