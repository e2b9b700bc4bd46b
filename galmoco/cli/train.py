"""``galmoco train``: a thin wrapper over :func:`galmoco.train.train`.

Options left out keep the value of ``--config`` (a YAML file) or, without one, the dataclass defaults
of :mod:`galmoco.config` (with ``--resume``: the run's own ``config.yaml``); options given override.
Every option that sets a config field is one row of :data:`OPTIONS` (its default shown in ``--help``
comes from :class:`~galmoco.config.TrainConfig`, its choices from the config's lists); a switch is an
``--x/--no-x`` pair, so a config file's ``true`` can be turned off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from galmoco.config import (
    ARCHS,
    FRAMES,
    OBJECTIVES,
    OPTIMIZERS,
    SIMILARITIES,
    TrainConfig,
    apply_overrides,
    config_value,
    load_config,
)
from galmoco.data.masks import RULES
from galmoco.data.mixing import MIX_METHODS
from galmoco.data.normalize import METHODS

__all__ = ["OPTIONS", "Option", "config_from_options", "train"]


@dataclass(frozen=True)
class Option:
    """One ``galmoco train`` option that sets a TrainConfig field.

    Attributes:
        decls: the option's names, e.g. ``"--lr"``, or ``"--mlp/--no-mlp"`` for a switch.
        field: the dotted TrainConfig field it sets, e.g. ``"optim.lr"``.
        help: one sentence; the default is added from TrainConfig.
        type: the click type; ``None`` for a switch.
        switch: for a switch on a non-boolean field, the field's values for on and off.
        default: the text shown as the default where the field's value alone does not say it.
    """

    decls: str
    field: str
    help: str
    type: Any = None
    switch: tuple[Any, Any] | None = None
    default: str | None = None

    @property
    def param(self) -> str:
        """The click parameter name: the field with ``__`` for dots."""
        return self.field.replace(".", "__")

    def shown_default(self) -> str:
        """The default for ``--help``: TrainConfig's value, or for a switch the name of its default side."""
        if self.default is not None:
            return self.default
        value = config_value(TrainConfig(), self.field)
        if self.type is not None:
            return str(value)
        on, off = self.decls.split("/")
        return on if value == (self.switch[0] if self.switch else True) else off

    def value(self, given: Any) -> Any:
        """The field value for what was given on the command line (``None``: not given)."""
        if given is None or self.switch is None:
            return given
        return self.switch[0] if given else self.switch[1]


_POSITIVE = click.FloatRange(min=0, min_open=True)
_PROBABILITY = click.FloatRange(min=0, max=1)

#: the options that set TrainConfig fields, in ``--help`` order
OPTIONS: tuple[Option, ...] = (
    Option("--objective", "objective", "Training objective.", click.Choice(OBJECTIVES)),
    Option("--epochs", "epochs", "Passes over the training split.", click.IntRange(min=1)),
    Option("--batch-size", "batch_size", "Images per step (per process).", click.IntRange(min=2)),
    Option("--lr", "optim.lr", "Base learning rate for a batch of 256 (scaled linearly with the batch size).",
           _POSITIVE, default="adamw 1.6e-2 in a frame, 3.2e-2 with --frame none; sgd 0.03"),
    Option("--optimizer", "optim.optimizer", "Optimiser.", click.Choice(OPTIMIZERS)),
    Option("--alpha", "alpha", "Weight of the InfoNCE term (moco-ae).", float),
    Option("--beta", "beta", "Weight of the reconstruction term (moco-ae).", float,
           default="1.5 with the L1 similarity, 1.0 with the cosine"),
    Option("--device", "device", "cpu, cuda, cuda:N or auto.", str),
    Option("--seed", "seed", "Random seed.", int),
    Option("--workers", "num_workers", "DataLoader worker processes.", click.IntRange(min=0)),
    Option("--in-memory/--from-file", "in_memory",
           "Hold the training stamps in memory, or read each batch from the store.",
           default="in memory when they take at most 2 GiB"),
    Option("--mlp/--no-mlp", "model.head", "MLP projection head (MoCo v2), or a linear one (v1).",
           switch=("mlp", "linear"), default="neither: no head, InfoNCE on the latent itself (model.head: "
           "identity)"),
    Option("--aug-plus/--no-aug-plus", "augment.aug_plus", "Stronger augmentations (MoCo v2 aug+)."),
    Option("--rotate/--no-rotate", "augment.rotate", "Turn each view by a random angle.",
           default="off with --frame o2 (the pose frame undoes turns), on otherwise"),
    Option("--split-noise/--shared-noise", "augment.split_noise",
           "Give the two views of a pair independent noise fields (recorrupted pair), as a second "
           "observation has; or let both keep the stored noise."),
    Option("--seeing-scatter", "augment.seeing_scatter",
           "Change each view's seeing: its Moffat PSF's FWHM times a lognormal factor of this log standard "
           "deviation (0.1: DES's scatter between exposures; 0: off).", click.FloatRange(min=0)),
    Option("--cos/--step-schedule", "optim.cosine",
           "Cosine learning-rate decay (MoCo v2), or x0.1 steps at 60% and 80% (v1)."),
    Option("--temperature", "moco.temperature", "InfoNCE temperature (0.07 v1; 0.2 v2).", _POSITIVE,
           default="0.2 in a frame, 0.1 with --frame none"),
    Option("--similarity", "moco.similarity", "How InfoNCE scores a query against a key: cosine (MoCo's "
           "dot product) or l1 (minus their L1 distance, the distance placement ranks by).",
           click.Choice(SIMILARITIES), default="l1 in the pose frame (o2), cosine otherwise"),
    Option("--symmetric/--one-way", "moco.symmetric",
           "Also score the key view's query against the query view's key and average the two InfoNCE "
           "terms (MoCo v3's symmetrised loss, the default), or score one way only (MoCo v1/v2)."),
    Option("--queue-size", "moco.queue_size", "Negatives in the MoCo queue.", click.IntRange(min=1),
           default="min(4096, a multiple of the batch size <= half the training set)"),
    Option("--arch", "model.arch", "Encoder.", click.Choice(ARCHS)),
    Option("--latent-dim", "model.latent_dim", "Latent vector size.", click.IntRange(min=1)),
    Option("--frame", "model.frame", "The frame the encoder reads each stamp in. o2: its pose frame "
           "(centroid, position angle, skew signs), so flips and turns by any angle give nearly the same "
           "latent; d4: its canonical flip/quarter-turn frame (exact for the 8 symmetries of the square); "
           "none: the stamp as it is (the original study).", click.Choice(FRAMES)),
    Option("--draw-frame", "model.draw_frame", "With --frame none: the frame the decoder draws in. o2: the "
           "stamp's pose frame, so the latent need not keep the orientation for the drawing; none: the "
           "stamp as given.", click.Choice(FRAMES), default="the encoder's frame; o2 with --frame none"),
    Option("--pool", "model.pool", "conv encoder: side of the map its last stage is average-pooled to. 4 "
           "keeps where the light is (the best reconstruction); 1 (global pooling) leaves only what the "
           "channels encode (docs/train.md measures both without a frame).", click.IntRange(min=1)),
    Option("--photometry/--no-photometry", "model.photometry",
           "Add a linear map of the stamp's aperture fluxes (radii 1/16, 2/16, 3/16 of the side) to the "
           "latent, or leave the latent to the convolutional encoder alone.",
           default="--photometry with --frame o2 or d4, --no-photometry with none"),
    Option("--compact-size", "model.compact_size",
           "With --frame o2: objects smaller than this (pixels, windowed RMS radius) reach the encoder "
           "magnified to it, so a star looks nearly the same under any seeing (0: off).",
           click.FloatRange(min=0), default="half the DES r-band PSF FWHM (1.81 px) with --frame o2"),
    Option("--mask-rule", "mask.rule", "Sky mask rule for the reconstruction loss.", click.Choice(RULES)),
    Option("--sky-weight", "mask.sky_weight", "Loss weight of sky pixels.", click.FloatRange(min=0)),
    Option("--norm", "normalize.method", "Flux normalisation.", click.Choice(METHODS)),
    Option("--label-column", "label_column", "Catalogue column for the kNN monitor ('' for none).", str),
    Option("--views", "bank.views", "cmc: band groups, comma-separated, e.g. gr,iz.", str),
    Option("--nce-k", "bank.k", "insdis/cmc: negatives per image.", click.IntRange(min=1)),
    Option("--nce-m", "bank.momentum", "insdis/cmc: memory-bank momentum.",
           click.FloatRange(min=0, max=1, max_open=True)),
    Option("--nce-t", "bank.temperature", "insdis/cmc: temperature.", _POSITIVE),
    Option("--softmax/--nce", "bank.softmax", "insdis/cmc: softmax cross-entropy or NCE loss."),
    Option("--amp/--no-amp", "amp", "bf16 autocast on CUDA."),
    Option("--channels-last/--no-channels-last", "channels_last", "Channels-last memory format."),
    Option("--compile/--no-compile", "compile", "torch.compile the encoder and decoder."),
    Option("--checkpoint-every", "checkpoint_every",
           "Keep checkpoints/checkpoint_NNNN.pt every this many epochs besides last.pt (0: none).",
           click.IntRange(min=0)),
    # Un-Mix image mixtures (Shen et al. 2022); the reference repository's flag in brackets
    Option("--mix", "mix.method", "Un-Mix image mixture of the query (moco, moco-ae, insdis, cmc): "
           "mixture = global then region rounds (--IM_type IM).", click.Choice(MIX_METHODS)),
    Option("--mix-global-alpha", "mix.global_alpha",
           "Global mixture weight ~ Beta(alpha, alpha) (--g_alpha).", _POSITIVE),
    Option("--mix-global-count", "mix.global_count", "Global mixing rounds per image (--g_num).",
           click.IntRange(min=0)),
    Option("--mix-global-prob", "mix.global_prob", "Probability of each global round (--g_prob).",
           _PROBABILITY),
    Option("--mix-region-beta", "mix.region_beta",
           "Region mixture: box area fraction 1 - Beta(beta, beta) (--r_beta).", _POSITIVE),
    Option("--mix-region-count", "mix.region_count", "Region mixing rounds per image (--r_num).",
           click.IntRange(min=0)),
    Option("--mix-region-prob", "mix.region_prob", "Probability of each region round (--r_prob).",
           _PROBABILITY),
    Option("--mix-region-decay", "mix.region_pixel_decay",
           "Pixel decay of an image whose first region round pastes a box (--r_pixel_decay).", _POSITIVE),
    Option("--mix-centre-sigma", "mix.centre_sigma",
           "Soft targets weight pixels by a centred Gaussian of this sigma (fraction of the stamp side), "
           "since the galaxy sits in the centre (null in --config: by area).", _POSITIVE),
    Option("--cutout-size", "mix.cutout_size",
           "--mix cutout: square side as a fraction of the stamp (--mask_size).",
           click.FloatRange(min=0, max=1, min_open=True)),
    Option("--cutout-prob", "mix.cutout_prob", "--mix cutout: probability per image (--cutout_p).",
           _PROBABILITY),
    Option("--erasing-prob", "mix.erasing_prob",
           "--mix erasing: probability per image (--random_erasing_prob).", _PROBABILITY),
)


def _with_options(command: Callable) -> Callable:
    """Apply :data:`OPTIONS` to a click command function (first row first in ``--help``)."""
    for opt in reversed(OPTIONS):
        kind = {"type": opt.type} if opt.type is not None else {}
        # default None: an option left out keeps the --config value; the shown default is TrainConfig's
        command = click.option(opt.decls, opt.param, default=None,
                               help=f"{opt.help} [default: {opt.shown_default()}]", **kind)(command)
    return command


def config_from_options(config_path: Path | None, resumed_run: Path | None,
                        options: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig: ``--config`` (else the resumed run's own ``config.yaml``, else the defaults)
    with the options given on the command line (``options``: click's parameters, ``None`` = not given)."""
    if config_path:
        config = load_config(config_path)
    elif resumed_run is not None and (resumed_run / "config.yaml").is_file():
        config = load_config(resumed_run / "config.yaml")  # the run's own settings, not the defaults
    else:
        config = TrainConfig()
    return apply_overrides(config, {opt.field: opt.value(options[opt.param]) for opt in OPTIONS})


@click.command("train")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.yaml, provenance.json, metrics.csv, checkpoints/, tensorboard/).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file with any subset of the TrainConfig keys.")
@_with_options
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt.")
def train(dataset: Path, run_dir: Path, config_path: Path | None, resume: bool, **options: Any) -> None:
    """Train the MoCo-regularised autoencoder (or a baseline) on a packed DATASET.h5."""
    from galmoco.train import train as run_training

    config = config_from_options(config_path, run_dir if resume else None, options)
    result = run_training(config, dataset, run_dir, resume=resume)
    last = result.metrics[-1] if result.metrics else {}
    click.echo(f"trained {result.epochs} epochs ({result.steps} steps); "
               f"final loss {last.get('loss', float('nan')):.4f}; checkpoint {result.checkpoint}")
