"""``galmoco train``: a thin wrapper over :func:`galmoco.train.train`.

Options left out keep the value of ``--config`` (a YAML file) or, without one, the dataclass defaults
of :mod:`galmoco.config` (with ``--resume``: the run's own ``config.yaml``); options given override.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["train"]

#: option name -> dotted TrainConfig field it sets
_FIELDS = {
    "objective": "objective", "epochs": "epochs", "batch_size": "batch_size", "lr": "optim.lr",
    "optimizer": "optim.optimizer", "device": "device", "seed": "seed", "workers": "num_workers",
    "in_memory": "in_memory",
    "temperature": "moco.temperature", "queue_size": "moco.queue_size", "arch": "model.arch",
    "latent_dim": "model.latent_dim", "frame": "model.frame", "mask_rule": "mask.rule",
    "sky_weight": "mask.sky_weight",
    "norm": "normalize.method", "label_column": "label_column", "alpha": "alpha", "beta": "beta",
    "views": "bank.views", "nce_k": "bank.k", "nce_m": "bank.momentum", "nce_t": "bank.temperature",
    "softmax": "bank.softmax", "amp": "amp", "channels_last": "channels_last", "compile": "compile",
}
_DEFAULT = " [default: from --config, else the TrainConfig default]"


@click.command("train")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.yaml, metrics.csv, checkpoints/, tensorboard/).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file with any subset of the TrainConfig keys.")
@click.option("--objective", type=click.Choice(["ae", "moco", "moco-ae", "insdis", "cmc"]),
              help="Training objective." + _DEFAULT)
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the training split." + _DEFAULT)
@click.option("--batch-size", type=click.IntRange(min=2), help="Images per step." + _DEFAULT)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Base learning rate for a batch of 256 (scaled linearly with the batch size)." + _DEFAULT)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), help="Optimiser." + _DEFAULT)
@click.option("--alpha", type=float, help="Weight of the InfoNCE term (moco-ae)." + _DEFAULT)
@click.option("--beta", type=float, help="Weight of the reconstruction term (moco-ae)." + _DEFAULT)
@click.option("--device", help="cpu, cuda, cuda:N or auto." + _DEFAULT)
@click.option("--seed", type=int, help="Random seed." + _DEFAULT)
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader worker processes." + _DEFAULT)
@click.option("--in-memory/--from-file", default=None,
              help="Hold the training stamps in memory, or read each batch from the store [default: in "
              "memory when they take at most 2 GiB].")
@click.option("--mlp", is_flag=True, default=None, help="MLP projection head (MoCo v2).")
@click.option("--aug-plus", is_flag=True, default=None, help="Stronger augmentations (MoCo v2 aug+).")
@click.option("--cos/--step-schedule", default=None,
              help="Cosine learning-rate decay (MoCo v2), or x0.1 steps at 60% and 80% (v1)." + _DEFAULT)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              help="InfoNCE temperature (0.07 v1; 0.2 v2)." + _DEFAULT)
@click.option("--queue-size", type=click.IntRange(min=1), help="Negatives in the MoCo queue [default: "
              "min(4096, a multiple of the batch size <= half the training set)].")
@click.option("--arch", type=click.Choice(["conv", "resnet18", "resnet50"]), help="Encoder." + _DEFAULT)
@click.option("--latent-dim", type=click.IntRange(min=1), help="Latent vector size." + _DEFAULT)
@click.option("--frame", type=click.Choice(["d4", "none"]),
              help="d4: encode each stamp in its canonical flip/quarter-turn frame (the 8 symmetries of the "
              "square give the same latent); none: the stamp as it is (the original study)." + _DEFAULT)
@click.option("--mask-rule", type=click.Choice(["segmentation", "positive", "none"]),
              help="Sky mask rule for the reconstruction loss." + _DEFAULT)
@click.option("--sky-weight", type=click.FloatRange(min=0), help="Loss weight of sky pixels." + _DEFAULT)
@click.option("--norm", type=click.Choice(["asinh", "log10"]), help="Flux normalisation." + _DEFAULT)
@click.option("--label-column", help="Catalogue column for the kNN monitor." + _DEFAULT)
@click.option("--views", help="cmc: band groups, comma-separated, e.g. gr,iz." + _DEFAULT)
@click.option("--nce-k", type=click.IntRange(min=1), help="insdis/cmc: negatives per image." + _DEFAULT)
@click.option("--nce-m", type=click.FloatRange(min=0, max=1, max_open=True),
              help="insdis/cmc: memory-bank momentum." + _DEFAULT)
@click.option("--nce-t", type=click.FloatRange(min=0, min_open=True),
              help="insdis/cmc: temperature." + _DEFAULT)
@click.option("--softmax/--nce", default=None,
              help="insdis/cmc: softmax cross-entropy or NCE loss." + _DEFAULT)
@click.option("--amp", is_flag=True, default=None, help="bf16 autocast on CUDA.")
@click.option("--channels-last", is_flag=True, default=None, help="Channels-last memory format.")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the encoder and decoder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt.")
def train(dataset: Path, run_dir: Path, config_path: Path | None, resume: bool, mlp: bool | None,
          aug_plus: bool | None, cos: bool | None, **options) -> None:
    """Train the MoCo-regularised autoencoder (or a baseline) on a packed DATASET.h5."""
    from galmoco.config import TrainConfig, apply_overrides, load_config
    from galmoco.train import train as run_training

    saved = run_dir / "config.yaml"
    if config_path:
        config = load_config(config_path)
    elif resume and saved.is_file():  # continue with the run's own settings, not the defaults
        config = load_config(saved)
    else:
        config = TrainConfig()
    overrides = {_FIELDS[name]: value for name, value in options.items()}
    overrides.update({"model.head": "mlp" if mlp else None, "augment.aug_plus": aug_plus or None,
                      "optim.cosine": cos})
    config = apply_overrides(config, overrides)
    result = run_training(config, dataset, run_dir, resume=resume)
    last = result.metrics[-1] if result.metrics else {}
    click.echo(f"trained {result.epochs} epochs ({result.steps} steps); "
               f"final loss {last.get('loss', float('nan')):.4f}; checkpoint {result.checkpoint}")
