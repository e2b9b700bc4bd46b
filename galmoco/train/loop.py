"""The training loop, on one device or many: ``train(config, store_path, run_dir, resume) -> RunResult``.

Per epoch: a deterministic batch order from ``(seed, epoch)``, augmentation on the device, the
objective's losses, an optimiser step; at the end the kNN monitor (when labels exist), a TensorBoard
reconstruction grid, a ``metrics.csv`` row, ``checkpoints/last.pt`` and, every ``checkpoint_every``
epochs, ``checkpoints/checkpoint_NNNN.pt``. Ctrl-C saves a checkpoint (with the position in the
epoch) and re-raises; a non-finite loss stops with GalmocoError and leaves the last good checkpoint
untouched. The run folder is locked for the run's lifetime and records its provenance
(:mod:`galmoco.train.run_folder`). See docs/train.md.

Under ``torchrun`` (or ``srun``) the same function runs in every process (docs/distributed.md): each
rank takes its slice of every global batch (``batch_size x world_size`` images, the learning rate
scaled to it), the objective is wrapped in DistributedDataParallel, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from galmoco import __version__
from galmoco.config import TrainConfig, config_from_dict, config_to_dict, save_config
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
from galmoco.io.store import CutoutDataset
from galmoco.memory import keep_freed_memory
from galmoco.train.build import DataPlan, Parts, build_parts, prepare_data, restore_parts
from galmoco.train.checkpoint import check_store, load_checkpoint, rng_state, run_contract, save_checkpoint
from galmoco.train.monitor import knn_monitor, log_reconstructions
from galmoco.train.run_folder import RunLock, provenance, read_metrics, record_provenance, write_metrics

__all__ = ["LOG_EVERY", "RESUME_SETTINGS", "RunResult", "epoch_batches", "numbered_checkpoint", "train"]

log = logging.getLogger(__name__)

#: TensorBoard step scalars every this many steps
LOG_EVERY = 10
#: the settings a resumed run takes from the given config; the rest comes from the checkpoint
RESUME_SETTINGS = ("epochs", "device", "num_workers", "in_memory", "num_threads", "checkpoint_every")
#: the losses averaged into each metrics.csv row
_LOSSES = ("loss", "loss_contrastive", "loss_recon")


@dataclass
class RunResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run directory; checkpoint: ``checkpoints/last.pt``; epochs: completed epochs;
        steps: optimiser steps; metrics: the ``metrics.csv`` rows (dicts, numbers as floats);
        state: this process's final ``model`` and ``objective`` state dicts (under torchrun every
        rank returns its own, so callers can check that the ranks agree).
    """

    run_dir: Path
    checkpoint: Path
    epochs: int
    steps: int
    metrics: list[dict[str, Any]]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """A run in progress: its settings, parts and position (everything the epoch loop updates)."""

    config: TrainConfig
    plan: DataPlan
    parts: Parts
    store_path: Path
    run_dir: Path
    device: torch.device
    dataset: CutoutDataset  # the training split (held in memory once for the whole run when it fits)
    step_fn: torch.nn.Module  # the objective, wrapped in DDP under torchrun
    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return rank() == 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.plan.train_idx) // self.plan.global_batch

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (positions in ``range(n)``) of one epoch: a permutation seeded by ``(seed, epoch)``,
    the incomplete last batch dropped. Depends on nothing else, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)[: (n // batch_size) * batch_size]
    return perm.view(-1, batch_size).tolist()


def numbered_checkpoint(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``RUN_DIR/checkpoints/checkpoint_NNNN.pt``: the checkpoint kept after ``epoch`` completed epochs."""
    return Path(run_dir) / "checkpoints" / f"checkpoint_{epoch:04d}.pt"


def train(config: TrainConfig, store_path: str | os.PathLike, run_dir: str | os.PathLike,
          resume: bool = False) -> RunResult:
    """Train on a packed store, writing the run directory (docs/architecture.md, "Training runs").

    Args:
        config: the configuration (on ``resume``, only the :data:`RESUME_SETTINGS` are taken from it;
            the rest comes from the checkpoint).
        store_path: the packed HDF5 store.
        run_dir: created if needed; must not hold a checkpoint unless ``resume``; locked while the run
            lasts (rank 0 holds the lock).
        resume: continue from ``run_dir/checkpoints/last.pt``.

    Returns:
        A :class:`RunResult`.

    Raises:
        GalmocoError: bad config or store, an existing run without ``resume``, another run writing
            ``run_dir``, a non-finite loss.
    """
    keep_freed_memory()
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    env = detect_env()
    # launched by torchrun/srun: join the group here, and leave it when done (unless the caller owns it)
    owns_group = env.world_size > 1 and not (dist.is_available() and dist.is_initialized())
    run_dir = Path(run_dir)
    if resume and not (run_dir / "checkpoints" / "last.pt").is_file():  # fail before creating anything
        raise GalmocoError(f"{run_dir / 'checkpoints' / 'last.pt'}: no such checkpoint")
    try:
        with RunLock(run_dir) if env.rank == 0 else contextlib.nullcontext():
            return _train(config, Path(store_path), run_dir, resume)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            teardown()


def _train(config: TrainConfig, store_path: Path, run_dir: Path, resume: bool) -> RunResult:
    from torch.utils.tensorboard import SummaryWriter

    config, state = _run_config(config, store_path, run_dir, resume)
    device = _join(config)
    config, plan = _prepare(config, store_path, run_dir, device, resume)
    run = _assemble(config, plan, store_path, run_dir, device, state)
    writer = SummaryWriter(str(run_dir / "tensorboard")) if run.main else None
    try:
        _epochs(run, writer)
        final = {"model": run.parts.objective.model.state_dict(),
                 "objective": run.parts.objective.extra_state_dict()}
    except KeyboardInterrupt:
        if run.main:
            save_checkpoint(_checkpoint_state(run), run.checkpoint_path)
            log.warning("interrupted: checkpoint saved to %s (continue with --resume)", run.checkpoint_path)
        raise
    finally:
        if writer is not None:
            writer.close()
        # drop the DDP-wrapped model before the process group goes (see distributed.teardown)
        run.step_fn = run.parts = None  # type: ignore[assignment]
    return RunResult(run_dir, run.checkpoint_path, run.epoch, run.step, run.rows, final)


def _run_config(config: TrainConfig, store_path: Path, run_dir: Path,
                resume: bool) -> tuple[TrainConfig, dict | None]:
    """The validated config of this run and, on ``resume``, the checkpoint it continues (checked against
    the store's data contract: same bands in order, stamp size, units)."""
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        check_store(state, store_path, ckpt_path)
        saved = config_from_dict(state["config"], where=str(ckpt_path))
        config = dataclasses.replace(saved, **{name: getattr(config, name) for name in RESUME_SETTINGS})
    elif ckpt_path.exists():
        raise GalmocoError(f"{run_dir}: already holds a training run; use --resume or another -o folder")
    return config.validate(), state


def _join(config: TrainConfig) -> torch.device:
    """The training device, joining the process group first when launched by torchrun/srun."""
    if detect_env().world_size > 1:
        device = init_distributed(config.device).device
    else:
        device = resolve_device(config.device)
    if config.amp and device.type != "cuda":
        log.warning("--amp (bf16 autocast) is for CUDA; training on %s in float32", device)
    return device


def _prepare(config: TrainConfig, store_path: Path, run_dir: Path, device: torch.device,
             resume: bool) -> tuple[TrainConfig, DataPlan]:
    """:func:`prepare_data` (rank 0 first: it caches the sky masks in the store), then rank 0 writes
    ``config.yaml`` and a ``provenance.json`` entry."""
    world, main = world_size(), rank() == 0
    if not main:
        dist.barrier()
    config, plan = prepare_data(config, store_path, world)
    if main:
        if world > 1:
            dist.barrier()
        save_config(config, run_dir / "config.yaml")
        record_provenance(run_dir, provenance(store_path, device, world, resume))
    return config, plan


def _assemble(config: TrainConfig, plan: DataPlan, store_path: Path, run_dir: Path, device: torch.device,
              state: dict[str, Any] | None) -> _Run:
    """Build the parts, restore a checkpoint's state, give each rank its own random streams, wrap in DDP."""
    steps_per_epoch = len(plan.train_idx) // plan.global_batch
    parts = build_parts(config, plan, device, steps_per_epoch)
    dataset = CutoutDataset(store_path, plan.train_idx, plan.fields, config.in_memory)
    run = _Run(config, plan, parts, store_path, run_dir, device, dataset, step_fn=parts.objective)
    if state is not None:
        _restore(run, state)
    me = rank()
    if me > 0:  # other augmentations and negatives than rank 0's (whose streams match one process)
        parts.generator.manual_seed(config.seed + 1_000_003 * me + run.step)
        torch.manual_seed(config.seed + 1_000_003 * me + run.step)
    if world_size() > 1:  # averages the gradients; queues and banks stay in sync through their own gathers
        run.step_fn = DistributedDataParallel(
            parts.objective, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)
    return run


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Continue from a checkpoint; a checkpoint of another global batch (world size) keeps the images
    seen and moves to the new step count and learning rate, as if the run had used them from the start."""
    restore_parts(run.parts, state)
    run.epoch, run.step = state["epoch"], state["step"]
    run.batches_done, run.totals = state["batches_done"], state["totals"]
    run.rows = read_metrics(run.run_dir / "metrics.csv", run.epoch)
    global_bs = run.plan.global_batch
    saved_bs = state.get("global_batch", run.config.batch_size)
    if saved_bs == global_bs:
        return
    run.batches_done = run.batches_done * saved_bs // global_bs
    run.step = run.epoch * run.steps_per_epoch + run.batches_done
    scheduler, optimizer = run.parts.scheduler, run.parts.optimizer
    scheduler.base_lrs = [run.config.scaled_lr(global_bs)] * len(optimizer.param_groups)
    scheduler.last_epoch = run.step
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["initial_lr"], group["lr"] = base, base * scheduler.lr_lambdas[0](run.step)


def _epochs(run: _Run, writer: Any) -> None:
    run.parts.objective.train()
    while run.epoch < run.config.epochs:
        _train_epoch(run, writer)
        _end_epoch(run, writer)


def _train_epoch(run: _Run, writer: Any) -> None:
    """The remaining batches of the current epoch, this rank's slice of each global batch."""
    from tqdm import tqdm

    config, me, bs = run.config, rank(), run.config.batch_size
    batches = [b[me * bs:(me + 1) * bs] for b in epoch_batches(
        len(run.plan.train_idx), run.plan.global_batch, config.seed, run.epoch)[run.batches_done:]]
    loader = DataLoader(run.dataset, sampler=batches, batch_size=None, num_workers=config.num_workers,
                        pin_memory=run.device.type == "cuda")
    bar = tqdm(loader, total=run.steps_per_epoch, initial=run.batches_done, leave=False,
               disable=None if run.main else True,  # one bar, rank 0's
               desc=f"epoch {run.epoch + 1}/{config.epochs}", unit="batch")
    t0 = time.perf_counter()
    for batch in bar:
        out = _step(run, batch)
        for k, v in out.items():
            run.totals[k] = run.totals.get(k, 0.0) + v
        run.totals["seconds"] = run.totals.get("seconds", 0.0) + (time.perf_counter() - t0)
        t0 = time.perf_counter()
        rate = run.batches_done * run.plan.global_batch / max(run.totals["seconds"], 1e-9)
        lr = run.parts.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{run.totals['loss'] / run.batches_done:.4f}", lr=f"{lr:.2e}",
                        img_s=f"{rate:.0f}")
        if run.main and run.step % LOG_EVERY == 0:
            for k, v in out.items():
                writer.add_scalar(f"train/{k}", v, run.step)
            writer.add_scalar("train/lr", lr, run.step)
    bar.close()


def _step(run: _Run, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimiser step on a batch; returns the objective's losses as numbers.

    Raises:
        GalmocoError: when the loss is not finite on any rank (before the step, so the last good
            checkpoint stays what it is).
    """
    device = run.device
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if run.config.channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.config.amp and device.type == "cuda"):
        out = run.step_fn(batch)
    loss = out["loss"]
    if not all_ranks_true(torch.isfinite(loss.detach()), device):
        raise GalmocoError(
            f"loss is {loss.item()} at epoch {run.epoch + 1}, step {run.step + 1} "
            f"(batch {run.batches_done + 1} of the epoch); training stopped and the last good "
            f"checkpoint {run.checkpoint_path} is kept (lower --lr, or look for NaN/inf pixels in the store)")
    optimizer = run.parts.optimizer
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    run.parts.scheduler.step()
    run.step += 1
    run.batches_done += 1
    return {k: float(v.detach()) for k, v in out.items()}


def _end_epoch(run: _Run, writer: Any) -> None:
    """Average the epoch's losses over ranks, monitor, and (rank 0) write the metrics row and checkpoints."""
    totals = average_across_ranks(run.totals, run.device)
    t_mon = time.perf_counter()
    acc: float | str = ""
    if run.main:
        model = run.parts.objective.model
        acc = knn_monitor(model, run.config, run.plan, run.store_path, run.device)
        log_reconstructions(model, run.plan, run.store_path, run.device, writer, run.epoch + 1)
    seconds = totals["seconds"]
    row = {"epoch": run.epoch + 1, "step": run.step, "lr": run.parts.optimizer.param_groups[0]["lr"],
           "images_per_s": run.batches_done * run.plan.global_batch / max(seconds, 1e-9), "knn_acc": acc,
           "time": seconds + time.perf_counter() - t_mon}
    row.update({k: totals[k] / run.batches_done if k in totals else "" for k in _LOSSES})
    run.rows.append(row)
    run.epoch, run.batches_done, run.totals = run.epoch + 1, 0, {}
    if not run.main:
        return
    for k in (*_LOSSES, "knn_acc", "images_per_s"):
        if row[k] != "":
            writer.add_scalar(f"epoch/{k}", row[k], run.epoch)
    write_metrics(run.run_dir / "metrics.csv", run.rows)
    state = _checkpoint_state(run)
    save_checkpoint(state, run.checkpoint_path)
    every = run.config.checkpoint_every
    if every and run.epoch % every == 0:
        save_checkpoint(state, numbered_checkpoint(run.run_dir, run.epoch))
    log.info("epoch %d/%d: loss %.4f, %.0f images/s%s", run.epoch, run.config.epochs, row["loss"],
             row["images_per_s"], f", kNN accuracy {acc:.3f}" if acc != "" else "")


def _checkpoint_state(run: _Run) -> dict[str, Any]:
    """The checkpoint dict (``galmoco.train.checkpoint``) of the run's current position."""
    parts, plan, config = run.parts, run.plan, run.config
    return {
        "model": parts.objective.model.state_dict(), "objective": parts.objective.extra_state_dict(),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "epoch": run.epoch, "step": run.step, "batches_done": run.batches_done, "totals": dict(run.totals),
        "rng": rng_state(parts.generator), "config": config_to_dict(config), "bands": plan.bands,
        "image_size": plan.image_size, "sky_sigma": list(config.sky_sigma),
        "queue_size": plan.queue_size, "galmoco_version": __version__,
        "world_size": world_size(), "global_batch": plan.global_batch,
        "contract": run_contract(run.store_path, config).to_dict(),
    }
