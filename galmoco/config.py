"""Training configuration: dataclasses with defaults, validation, and YAML load/save.

A :class:`TrainConfig` composes the model, MoCo and optimiser settings defined here with the data
layer's :class:`~galmoco.data.normalize.NormalizeConfig`, :class:`~galmoco.data.masks.MaskConfig`
and :class:`~galmoco.data.augment.AugmentConfig`. The MoCo v2 switches of the official recipe map to
nested fields: ``--mlp`` is ``model.head = "mlp"``, ``--aug-plus`` is ``augment.aug_plus``, ``--cos``
is ``optim.cosine``. Only this module and the layers after ``data`` import it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from galmoco.data.augment import AugmentConfig
from galmoco.data.masks import MaskConfig
from galmoco.data.normalize import NormalizeConfig
from galmoco.errors import GalmocoError

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "FRAMES",
    "OBJECTIVES",
    "ModelConfig",
    "BankConfig",
    "MocoConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "auto_queue_size",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]

#: training objectives: reconstruction only, contrastive only, the two combined, and the memory-bank
#: objectives of the CMC code base (instance discrimination, contrastive multiview coding)
OBJECTIVES: tuple[str, ...] = ("ae", "moco", "moco-ae", "insdis", "cmc")
#: the encoder's input frames (``model.frame``): the discrete D4 frame, the continuous pose frame, none
FRAMES: tuple[str, ...] = ("d4", "o2", "none")
#: queue size used when ``moco.queue_size`` is unset and the training set is large enough
DEFAULT_QUEUE_SIZE = 4096
#: batch size the base learning rate refers to (linear scaling rule, Goyal et al. 2017)
REFERENCE_BATCH = 256


@dataclass
class ModelConfig:
    """Network shape.

    Attributes:
        arch: ``"conv"`` (small, CPU-friendly), ``"resnet18"`` or ``"resnet50"`` (3x3 stem, no max-pool).
        latent_dim: size of the latent vector that ``embed`` writes.
        widths: channels of the conv encoder's stride-2 stages (mirrored by the decoder, also for the
            ResNets); the stamp side must be divisible by ``2 ** len(widths)``.
        pool: side of the map the conv encoder average-pools its last stage to (4: where the light
            is survives; 1: global average pooling).
        head: projection head, ``"linear"`` (MoCo v1), ``"mlp"`` (v2) or ``"identity"`` (InfoNCE on the
            latent itself).
        proj_dim: output size of the projection head.
        frame: ``"d4"``: the encoder reads each stamp in its canonical D4 frame and the decoder draws in
            it (``galmoco.models.canonical``), so the latent is exactly the same for the eight flips
            and quarter turns of a stamp; ``"o2"``: in its pose frame (adaptive-moment centroid, position
            angle and skewness signs, ``galmoco.models.pose``), so the same holds, up to interpolation and
            noise, for turns by any angle, flips and shifts; ``"none"``: the stamp as given, any
            invariance is learned.
    """

    arch: str = "conv"
    latent_dim: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 128)
    pool: int = 4
    head: str = "linear"
    proj_dim: int = 128
    frame: str = "o2"


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
        temperature: InfoNCE temperature: 0.2 (MoCo v2's value, the default: on the simulated survey,
            with the other defaults and 20 epochs, 0.07 (v1's) left the ``moco-ae`` galaxy-pixel
            reconstruction error 21% above the ``ae`` baseline's, 0.2 13%); 0.07 for v1.
        shuffle_bn: split-BN over ``bn_splits`` sub-batches plus a shuffled key batch, so BN cannot
            leak the positive pair on one device.
        bn_splits: sub-batches of the split BN (the official single-GPU demo uses 8); the batch size
            must be a multiple of it.
        key_bn_buffers: ``"own"`` (official: the momentum update covers parameters only, the key
            encoder's BN buffers are its own) or ``"momentum"`` (BN buffers averaged too).
    """

    queue_size: int | None = None
    momentum: float = 0.99
    temperature: float = 0.2
    shuffle_bn: bool = True
    bn_splits: int = 8
    key_bn_buffers: str = "own"


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
            scaling rule). ``None``: 4e-3 for AdamW (2e-3 at the default batch of 128; measured on the
            simulated survey against 1e-3), 0.03 for SGD (MoCo's value).
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

    def base_lr(self) -> float:
        """The learning rate for a batch of 256."""
        if self.lr is not None:
            return self.lr
        return 4e-3 if self.optimizer == "adamw" else 0.03

    def scaled_lr(self, batch_size: int) -> float:
        """``base_lr() * batch_size / 256``: the peak rate actually used."""
        return self.base_lr() * batch_size / REFERENCE_BATCH


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``RUN_DIR/config.yaml`` and in every checkpoint.

    Attributes:
        objective: ``"ae"``, ``"moco"`` or ``"moco-ae"``.
        alpha: weight of the InfoNCE term (moco-ae).
        beta: weight of the masked reconstruction term (moco-ae).
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
    """

    objective: str = "moco-ae"
    alpha: float = 1.0
    beta: float = 1.0
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
    model: ModelConfig = field(default_factory=ModelConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

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

    def validate(self) -> TrainConfig:
        """Check values; returns ``self``. Raises GalmocoError naming the option."""
        checks = [
            (self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}"),
            (self.recon_target in ("view", "stored"), "recon_target", "view or stored"),
            (self.model.arch in ("conv", "resnet18", "resnet50"), "model.arch", "conv, resnet18 or resnet50"),
            (self.model.head in ("linear", "mlp", "identity"), "model.head", "linear, mlp or identity"),
            (self.model.frame in FRAMES, "model.frame", ", ".join(FRAMES)),
            (self.model.latent_dim > 0 and self.model.proj_dim > 0, "model.latent_dim", "positive sizes"),
            (len(self.model.widths) > 0, "model.widths", "at least one stage"),
            (self.optim.optimizer in ("adamw", "sgd"), "optim.optimizer", "adamw or sgd"),
            (self.optim.base_lr() > 0, "optim.lr", "a positive number"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 2, "batch_size", "at least 2"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "in [0, 1)"),
            (0.0 <= self.moco.momentum < 1.0, "moco.momentum", "in [0, 1)"),
            (self.moco.temperature > 0, "moco.temperature", "positive"),
            (self.moco.key_bn_buffers in ("own", "momentum"), "moco.key_bn_buffers", "own or momentum"),
            (self.moco.queue_size is None or self.moco.queue_size >= 1, "moco.queue_size", "positive"),
            (self.num_workers >= 0, "num_workers", "0 or more"),
            (self.num_threads is None or self.num_threads >= 1, "num_threads", "at least 1"),
            (self.bank.k >= 1, "bank.k", "at least 1"),
            (0.0 <= self.bank.momentum < 1.0, "bank.momentum", "in [0, 1)"),
            (self.bank.temperature > 0, "bank.temperature", "positive"),
            (self.objective != "cmc" or self.model.latent_dim % len(self.bank.views.split(",")) == 0,
             "model.latent_dim", f"a multiple of the number of --views ({self.bank.views})"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise GalmocoError(
                    f"config option {name}: bad value {_value(self, name)!r}; expected {expected}")
        if self.contrastive and self.moco.shuffle_bn and self.batch_size % self.moco.bn_splits:
            raise GalmocoError(
                f"config option batch_size: {self.batch_size} is not a multiple of moco.bn_splits "
                f"({self.moco.bn_splits}), which split-BN needs; change one of them or set "
                "moco.shuffle_bn false"
            )
        return self


def _value(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def auto_queue_size(n_train: int, batch_size: int, default: int = DEFAULT_QUEUE_SIZE) -> int:
    """The default queue size: ``min(default, largest multiple of batch_size <= n_train / 2)``, at least
    one batch.

    Args:
        n_train: training-set size (objects).
        batch_size: images per step.
        default: upper bound.
    """
    return max(batch_size, min(default, (n_train // 2 // batch_size) * batch_size))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as nested dicts of YAML/torch-safe primitives (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def config_from_dict(data: dict[str, Any], cls: type = TrainConfig, where: str = "config") -> Any:
    """Build a (nested) config dataclass from a dict; missing keys keep their defaults.

    Args:
        data: mapping as written by :func:`config_to_dict` (or a hand-written YAML file).
        cls: dataclass to build.
        where: name of the source for error messages (a file name).

    Raises:
        GalmocoError: naming unknown keys (with their dotted path) and the valid ones.
    """
    return _build(cls, data, where, "")


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise GalmocoError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {data!r}")
    defaults = cls()
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise GalmocoError(
            f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''} are {', '.join(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, where, f"{prefix}{key}.")
        else:
            value = _check_type(value, default, where, prefix + key)
        kwargs[key] = value
    return cls(**kwargs)


def _check_type(value: Any, default: Any, where: str, name: str) -> Any:
    """``value`` converted to the kind of ``default`` (lists to tuples, ints to floats), or GalmocoError."""
    if isinstance(value, list):
        value = tuple(value)
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise GalmocoError(f"{where}: {name} must be {kind.__name__}, got {value!r}")


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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config_to_dict(config), fh, sort_keys=False)
    os.replace(tmp, path)
    return path
