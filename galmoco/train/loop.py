"""The single-device training loop: ``train(config, store_path, run_dir, resume=False) -> RunResult``.

Per epoch: a deterministic batch order from ``(seed, epoch)``, augmentation on the device, the
objective's losses, an optimiser step; at the end the kNN monitor (when labels exist), a TensorBoard
reconstruction grid, a ``metrics.csv`` row, and ``checkpoints/last.pt``. Ctrl-C saves a checkpoint
(with the position in the epoch) and re-raises; a non-finite loss stops with GalmocoError and leaves
the last good checkpoint untouched. See docs/train.md.

Under ``torchrun`` (or ``srun``) the same function runs in every process (docs/distributed.md): each
rank takes its slice of every global batch (``batch_size x world_size`` images, the learning rate
scaled to it), the objective is wrapped in DistributedDataParallel, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from galmoco import __version__
from galmoco.config import TrainConfig, auto_queue_size, config_from_dict, config_to_dict, save_config
from galmoco.data.augment import GalaxyAugment
from galmoco.data.masks import ensure_sky_masks
from galmoco.data.normalize import estimate_store_sky_sigma
from galmoco.distributed import (
    all_ranks_true,
    average_across_ranks,
    detect_env,
    init_distributed,
    rank,
    resolve_device,
    teardown,
    world_size,
)
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutDataset, CutoutStore
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import (
    check_store,
    load_checkpoint,
    rng_state,
    run_contract,
    save_checkpoint,
    set_rng_state,
)
from galmoco.train.knn import compute_latents, encode_labels, knn_accuracy
from galmoco.train.objectives import Objective, build_objective

__all__ = ["METRIC_COLUMNS", "RunResult", "epoch_batches", "lr_factor", "split_indices",
           "train"]

log = logging.getLogger(__name__)

#: columns of RUN_DIR/metrics.csv (one row per epoch)
METRIC_COLUMNS = ("epoch", "step", "loss", "loss_contrastive", "loss_recon", "lr", "images_per_s",
                  "knn_acc", "time")
#: at most this many training latents form the kNN monitor's reference bank
KNN_BANK_MAX = 10_000
#: TensorBoard step scalars every this many steps
LOG_EVERY = 10
#: environment variable naming a folder where every rank saves its final state (to check that ranks agree)
DUMP_RANK_STATE_ENV = "GALMOCO_DUMP_RANK_STATE"


@dataclass
class RunResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run directory; checkpoint: ``checkpoints/last.pt``; epochs: completed epochs;
        steps: optimiser steps; metrics: the ``metrics.csv`` rows (dicts, numbers as floats).
    """

    run_dir: Path
    checkpoint: Path
    epochs: int
    steps: int
    metrics: list[dict[str, Any]]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/held-out split of ``range(n)``, both sorted; ``val_fraction=0``: none held out."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (positions in ``range(n)``) of one epoch: a permutation seeded by ``(seed, epoch)``,
    the incomplete last batch dropped. Depends on nothing else, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)[: (n // batch_size) * batch_size]
    return perm.view(-1, batch_size).tolist()


def lr_factor(step: int, total_steps: int, warmup_steps: int, cosine: bool) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up over ``warmup_steps``, then
    cosine decay to 0 (MoCo v2) or x0.1 at 60% and x0.01 at 80% of ``total_steps`` (MoCo v1's steps)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cosine:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(step >= m * total_steps for m in (0.6, 0.8))


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as fh:
        writer = csv.DictWriter(fh, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        rows = [{k: (float(v) if v not in ("", None) else "") for k, v in row.items()}
                for row in csv.DictReader(fh)]
    for r in rows:
        r["epoch"], r["step"] = int(r["epoch"]), int(r["step"])
    return [r for r in rows if r["epoch"] <= upto_epoch]


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds third-party code that uses the global RNG)
    random.seed(seed)


def _prepare(config: TrainConfig, store_path: Path, world: int = 1) -> tuple[TrainConfig, dict[str, Any]]:
    """Read the store's shape and labels, estimate the sky noise, cache sky masks, split, size the queue
    (for the global batch of ``world`` processes)."""
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
    info = {"bands": "".join(bands), "image_size": shape[1], "labels": labels, "train_idx": train_idx,
            "val_idx": val_idx, "queue_size": queue_size, "fields": fields, "global_batch": global_batch}
    return config, info


def _build(config: TrainConfig, info: dict[str, Any], device: torch.device, steps_per_epoch: int):
    _seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model = GalaxyModel(config, tuple(info["bands"]), info["image_size"], config.sky_sigma)
    augment = GalaxyAugment(config.augment, config.sky_sigma)
    objective = build_objective(model, augment, config, generator, info["queue_size"], info["train_idx"])
    objective.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    if config.compile:  # in place: the state-dict keys stay those of the plain modules
        for module in (model.encoder, model.decoder):
            if module is not None:
                module.compile()
    params = [p for p in objective.parameters() if p.requires_grad]
    lr = config.optim.scaled_lr(info["global_batch"])
    if config.optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.optim.weight_decay)
    total = config.epochs * steps_per_epoch
    warmup = round(config.optim.warmup_epochs * steps_per_epoch)
    cosine = config.optim.cosine
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cosine))
    return objective, optimizer, scheduler, generator


def _monitor(objective: Objective, config: TrainConfig, info: dict[str, Any], store_path: Path,
             device: torch.device, writer: Any, epoch: int) -> float | str:
    """kNN accuracy on the held-out split ("" without labels) and a reconstruction grid in TensorBoard."""
    model = objective.model
    load = {"batch_size": max(256, config.batch_size), "num_workers": config.num_workers}
    acc: float | str = ""
    if info["labels"] is not None and len(info["val_idx"]):
        bank_idx = info["train_idx"][np.random.default_rng(config.seed).permutation(len(info["train_idx"]))]
        bank_idx = np.sort(bank_idx[:KNN_BANK_MAX])

        def latents(idx: np.ndarray) -> torch.Tensor:
            loader = DataLoader(CutoutDataset(store_path, idx, ("image",)), **load)
            return compute_latents(model, loader, device)

        bank, val = latents(bank_idx), latents(info["val_idx"])
        labels = torch.as_tensor(info["labels"], device=device)
        acc = knn_accuracy(bank, labels[torch.as_tensor(bank_idx, device=device)], val,
                           labels[torch.as_tensor(info["val_idx"], device=device)])
    if model.decoder is not None:
        from torchvision.utils import make_grid

        show = info["val_idx"] if len(info["val_idx"]) else info["train_idx"]
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
    return acc


def train(config: TrainConfig, store_path: str | os.PathLike, run_dir: str | os.PathLike,
          resume: bool = False) -> RunResult:
    """Train on a packed store, writing the run directory (docs/architecture.md, "Training runs").

    Args:
        config: the configuration (on ``resume``, only ``epochs``, ``device``, ``num_workers``,
            ``in_memory`` and ``num_threads`` are taken from it; the rest comes from the checkpoint).
        store_path: the packed HDF5 store.
        run_dir: created if needed; must not hold a checkpoint unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt``.

    Returns:
        A :class:`RunResult`.

    Raises:
        GalmocoError: bad config or store, an existing run without ``resume``, a non-finite loss.
    """
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    # launched by torchrun/srun: join the group here, and leave it when done (unless the caller owns it)
    owns_group = detect_env().world_size > 1 and not (dist.is_available() and dist.is_initialized())
    try:
        return _train(config, Path(store_path), Path(run_dir), resume)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            teardown()


def _train(config: TrainConfig, store_path: Path, run_dir: Path, resume: bool) -> RunResult:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        check_store(state, store_path, ckpt_path)  # the data contract: same bands, size, units
        saved = config_from_dict(state["config"], where=str(ckpt_path))
        config = dataclasses.replace(saved, epochs=config.epochs, device=config.device,
                                     num_workers=config.num_workers, in_memory=config.in_memory,
                                     num_threads=config.num_threads)
    elif ckpt_path.exists():
        raise GalmocoError(f"{run_dir}: already holds a training run; use --resume or another -o folder")
    config.validate()
    if detect_env().world_size > 1:
        device = init_distributed(config.device).device
    else:
        device = resolve_device(config.device)
    world, me = world_size(), rank()
    main = me == 0
    amp = config.amp and device.type == "cuda"
    if config.amp and not amp:
        log.warning("--amp (bf16 autocast) is for CUDA; training on %s in float32", device)
    if not main:  # rank 0 caches the sky masks in the store first
        dist.barrier()
    config, info = _prepare(config, store_path, world)
    contract = run_contract(store_path, config).to_dict()
    if main:
        if world > 1:
            dist.barrier()
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    n_train, bs, global_bs = len(info["train_idx"]), config.batch_size, info["global_batch"]
    steps_per_epoch = n_train // global_bs
    objective, optimizer, scheduler, generator = _build(config, info, device, steps_per_epoch)
    epoch, step, batches_done, totals = 0, 0, 0, {}
    if state is not None:
        objective.model.load_state_dict(state["model"])
        objective.load_extra_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], generator)
        epoch, step = state["epoch"], state["step"]
        batches_done, totals = state["batches_done"], state["totals"]
        if state.get("global_batch", bs) != global_bs:  # another world size: same images seen, new schedule
            batches_done = batches_done * state["global_batch"] // global_bs
            step = epoch * steps_per_epoch + batches_done
            scheduler.base_lrs = [config.optim.scaled_lr(global_bs)] * len(optimizer.param_groups)
            scheduler.last_epoch = step
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["initial_lr"], group["lr"] = base, base * scheduler.lr_lambdas[0](step)
    if me > 0:  # other augmentations and negatives than rank 0's (whose streams match one process)
        generator.manual_seed(config.seed + 1_000_003 * me + step)
        torch.manual_seed(config.seed + 1_000_003 * me + step)
    step_fn: torch.nn.Module = objective
    if world > 1:  # averages the gradients; queues and banks stay in sync through their own gathers
        step_fn = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    metrics_path = run_dir / "metrics.csv"
    rows = _read_metrics(metrics_path, epoch) if resume else []
    dataset = CutoutDataset(store_path, info["train_idx"], info["fields"], config.in_memory)
    writer = SummaryWriter(str(run_dir / "tensorboard")) if main else None

    def checkpoint() -> dict[str, Any]:
        return {
            "model": objective.model.state_dict(), "objective": objective.extra_state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "batches_done": batches_done, "totals": dict(totals),
            "rng": rng_state(generator), "config": config_to_dict(config), "bands": info["bands"],
            "image_size": info["image_size"], "sky_sigma": list(config.sky_sigma),
            "queue_size": info["queue_size"], "galmoco_version": __version__,
            "world_size": world, "global_batch": global_bs, "contract": contract,
        }

    objective.train()
    try:
        while epoch < config.epochs:
            batches = [b[me * bs:(me + 1) * bs]  # this rank's slice of each global batch
                       for b in epoch_batches(n_train, global_bs, config.seed, epoch)[batches_done:]]
            loader = DataLoader(dataset, sampler=batches, batch_size=None, num_workers=config.num_workers,
                                pin_memory=device.type == "cuda")
            t0 = time.perf_counter()
            bar = tqdm(loader, total=steps_per_epoch, initial=batches_done, leave=False,
                       disable=None if main else True,  # one bar, rank 0's
                       desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
            for batch in bar:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                if config.channels_last:
                    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = step_fn(batch)
                loss = out["loss"]
                if not all_ranks_true(torch.isfinite(loss.detach()), device):
                    raise GalmocoError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                        f"(batch {batches_done + 1} of the epoch); training stopped and the last good "
                        f"checkpoint {ckpt_path} is kept"
                        " (lower --lr, or look for NaN/inf pixels in the store)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                batches_done += 1
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach())
                totals["seconds"] = totals.get("seconds", 0.0) + (time.perf_counter() - t0)
                t0 = time.perf_counter()
                rate = batches_done * global_bs / max(totals["seconds"], 1e-9)
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{totals['loss'] / batches_done:.4f}", lr=f"{lr:.2e}",
                                img_s=f"{rate:.0f}")
                if main and step % LOG_EVERY == 0:
                    for k, v in out.items():
                        writer.add_scalar(f"train/{k}", float(v.detach()), step)
                    writer.add_scalar("train/lr", lr, step)
            bar.close()
            totals = average_across_ranks(totals, device)
            t_mon = time.perf_counter()
            acc = _monitor(objective, config, info, store_path, device, writer, epoch + 1) if main else ""
            row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": batches_done * global_bs / max(totals["seconds"], 1e-9), "knn_acc": acc,
                   "time": totals["seconds"] + time.perf_counter() - t_mon}
            for k in ("loss", "loss_contrastive", "loss_recon"):
                row[k] = totals[k] / batches_done if k in totals else ""
            rows.append(row)
            epoch, batches_done, totals = epoch + 1, 0, {}
            if main:
                for k in ("loss", "loss_contrastive", "loss_recon", "knn_acc", "images_per_s"):
                    if row[k] != "":
                        writer.add_scalar(f"epoch/{k}", row[k], epoch)
                _write_metrics(metrics_path, rows)
                save_checkpoint(checkpoint(), ckpt_path)
                log.info("epoch %d/%d: loss %.4f, %.0f images/s%s", epoch, config.epochs, row["loss"],
                         row["images_per_s"], f", kNN accuracy {acc:.3f}" if acc != "" else "")
        if os.environ.get(DUMP_RANK_STATE_ENV):
            torch.save({"model": objective.model.state_dict(), "objective": objective.extra_state_dict()},
                       Path(os.environ[DUMP_RANK_STATE_ENV]) / f"rank{me}.pt")
    except KeyboardInterrupt:
        if main:
            save_checkpoint(checkpoint(), ckpt_path)
            log.warning("interrupted: checkpoint saved to %s (continue with --resume)", ckpt_path)
        raise
    finally:
        if writer is not None:
            writer.close()
        # drop the DDP-wrapped model before the process group goes (see distributed.teardown)
        step_fn = objective = optimizer = scheduler = None
    return RunResult(run_dir, ckpt_path, epoch, step, rows)
