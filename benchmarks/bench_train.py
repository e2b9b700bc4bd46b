"""Training throughput on CPU: images/s of one training step for ae, moco and moco-ae, and of the data
path alone (store reads + the two augmented views of MoCo; reads only for ae), in one run; the data
path should be >= 5x the step it feeds. The data path is timed twice: with the training split held in
memory (what ``galmoco train`` does for stores up to 2 GiB; the one-time load is included) and read
batch by batch from the file. The step itself includes the augmentation (it runs on the
training device), so the ratio measures how much of a step the data path would cost on its own.

With ``--device cuda``: images/s of ``moco-ae`` end to end on the GPU (store reads through a pinned
DataLoader, non-blocking copies, augmentation and the step on the GPU), in float32 and with
``--amp --channels-last`` (bf16 autocast), the ratio between them, and the mean GPU utilisation
(``torch.cuda.utilization()``, which needs the ``pynvml`` package; "n/a" without it).

    python benchmarks/bench_train.py [--quick] [--threads N] [--batch-size B]
    python benchmarks/bench_train.py --device cuda [--arch resnet18] [--workers 8] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from galmoco.config import FRAMES, SIMILARITIES, TrainConfig
from galmoco.io import store
from galmoco.io.store import CutoutDataset
from galmoco.memory import keep_freed_memory
from galmoco.train.build import DataPlan, build_parts, prepare_data
from galmoco.train.loop import epoch_batches


def write_store(path: Path, n: int, size: int = 64, bands: str = "griz", seed: int = 0) -> Path:
    """Random elliptical Gaussian galaxies with unit sky noise, stored as docs/architecture.md says."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    theta, q, r = rng.uniform(0, np.pi, n), rng.uniform(0.3, 1, n), rng.uniform(2, 6, n)
    u = xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]
    v = -xx[None] * np.sin(theta)[:, None, None] + yy[None] * np.cos(theta)[:, None, None]
    profile = 30 * np.exp(-0.5 * ((u / r[:, None, None]) ** 2 + (v / (q * r)[:, None, None]) ** 2))
    images = (profile[:, None] + rng.normal(0, 1, (n, len(bands), size, size))).astype(np.float32)
    return store.write_store(path, images, bands=bands, catalog={"id": [f"g{i}" for i in range(n)]})


def data_path(store: Path, info: DataPlan, objective_, generator: torch.Generator, batch_size: int,
              steps: int, in_memory: bool) -> tuple[float, float, list[dict[str, torch.Tensor]]]:
    """(images/s, seconds of the one-time load, the batches) of the data path: store reads through the
    training DataLoader, then the augmented views the step uses. ``in_memory``: the training split is
    read into memory once when the dataset is made (the default for stores up to 2 GiB; timed apart,
    as it is paid once per run, not per batch), else read batch by batch from the file."""
    t = time.perf_counter()
    dataset = CutoutDataset(store, info.train_idx, info.fields, in_memory=in_memory)
    load = time.perf_counter() - t
    order = epoch_batches(len(info.train_idx), batch_size, 0, 0)[:steps + 1]
    loader = DataLoader(dataset, sampler=order, batch_size=None)
    views = 2 if objective_.config.contrastive else 0  # ae reconstructs the stored stamp: no augmentation
    if views:  # warm-up: oneDNN builds its primitives on first use
        objective_.augment.views(dataset[0]["image"].expand(batch_size, -1, -1, -1), generator)
    batches = []
    t = time.perf_counter()
    for batch in loader:
        if views:  # as MocoObjective does: the pair, both views in one call
            objective_.augment.views(batch["image"], generator)
        batches.append({k: v for k, v in batch.items() if k != "index"})
    return len(batches) * batch_size / (time.perf_counter() - t), load, batches


def bench(store: Path, objective: str, batch_size: int, steps: int, frame: str | None = None,
          aug_plus: bool = False, similarity: str | None = None, compact_size: float | None = None,
          symmetric: bool | None = None) -> tuple[float, float, float, float]:
    """Images/s of the training step, of the data path from memory and from the file, and the seconds
    of the in-memory load (``frame``: ``model.frame``, default the config's; ``aug_plus``: aug+;
    ``similarity``: ``moco.similarity``, default the config's; ``compact_size``: ``model.compact_size``;
    ``symmetric``: ``moco.symmetric``, default the config's)."""
    cfg = TrainConfig(objective=objective, batch_size=batch_size, device="cpu", epochs=1, label_column="")
    cfg.model.frame = frame or cfg.model.frame
    cfg.moco.similarity = similarity or cfg.moco.similarity
    cfg.model.compact_size = compact_size
    cfg.moco.symmetric = cfg.moco.symmetric if symmetric is None else symmetric
    cfg.augment.aug_plus = aug_plus or cfg.augment.aug_plus
    cfg, info = prepare_data(cfg, store)
    parts = build_parts(cfg, info, torch.device("cpu"), steps)
    objective_, optimizer, generator = parts.objective, parts.optimizer, parts.generator
    file_rate, _, _ = data_path(store, info, objective_, generator, batch_size, steps, in_memory=False)
    memory_rate, load, batches = data_path(store, info, objective_, generator, batch_size, steps,
                                           in_memory=True)
    objective_.train()
    for i, batch in enumerate(batches):
        if i == 1:  # the first step is warm-up
            t = time.perf_counter()
        loss = objective_(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(batches) - 1) * batch_size / (time.perf_counter() - t), memory_rate, file_rate, load


def gpu_utilization() -> float | None:
    """Percent of the last sample period the GPU was busy (NVML), or None when pynvml is missing."""
    try:
        return float(torch.cuda.utilization())
    except (ModuleNotFoundError, RuntimeError):
        return None


def bench_cuda(store: Path, arch: str, batch_size: int, steps: int, workers: int,
               fast: bool) -> tuple[float, float | None]:
    """(images/s, mean GPU utilisation %) of moco-ae end to end on CUDA; ``fast``: bf16 + channels-last."""
    cfg = TrainConfig(objective="moco-ae", batch_size=batch_size, device="cuda", epochs=1, label_column="",
                      num_workers=workers, amp=fast, channels_last=fast)
    cfg.model.arch = arch
    device = torch.device("cuda")
    cfg, info = prepare_data(cfg, store)
    parts = build_parts(cfg, info, device, steps)
    objective_, optimizer = parts.objective, parts.optimizer
    batches = epoch_batches(len(info.train_idx), batch_size, 0, 0)[:steps + 1]
    loader = DataLoader(CutoutDataset(store, info.train_idx, info.fields), num_workers=workers,
                        pin_memory=True, sampler=batches, batch_size=None)
    objective_.train()
    utilisation = []
    for i, batch in enumerate(loader):
        if i == 1:  # the first step (cuDNN autotuning, allocator warm-up) is not timed
            torch.cuda.synchronize()
            t = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if fast:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast):
            loss = objective_(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 1 and (u := gpu_utilization()) is not None:
            utilisation.append(u)
    torch.cuda.synchronize()
    rate = steps * batch_size / (time.perf_counter() - t)
    return rate, (sum(utilisation) / len(utilisation) if utilisation else None)


def main_cuda(args: argparse.Namespace, steps: int) -> None:
    """The ``--device cuda`` benchmark: float32 against bf16 + channels-last, one table."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "bench.h5", n=(steps + 1) * args.batch_size + 64)
        for fast in (False, True):
            rows.append((fast, *bench_cuda(store, args.arch, args.batch_size, steps, args.workers, fast)))
    print(f"### bench_train, CUDA ({datetime.date.today()})\n")
    print(f"- machine: {platform.platform()}, {torch.cuda.get_device_name()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}")
    print(f"- command: `python benchmarks/bench_train.py {' '.join(sys.argv[1:])}`")
    print(f"- moco-ae end to end from the packed store, {args.arch}, 4x64x64 stamps, "
          f"batch {args.batch_size}, {args.workers} DataLoader workers, {steps} timed steps\n")
    print("| precision | images/s | GPU utilisation | speed-up |")
    print("|---|---:|---:|---:|")
    base = rows[0][1]
    for fast, rate, util in rows:
        name = "bf16 autocast + channels-last" if fast else "float32"
        shown = f"{util:.0f}%" if util is not None else "n/a"
        print(f"| {name} | {rate:.0f} | {shown} | {rate / base:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frame", choices=FRAMES, default=None, help="model.frame (default: the config's)")
    parser.add_argument("--aug-plus", action="store_true", help="augment.aug_plus")
    parser.add_argument("--similarity", choices=SIMILARITIES, default=None,
                        help="moco.similarity (default: the config's)")
    parser.add_argument("--compact-size", type=float, default=None,
                        help="model.compact_size (default: the config's; 0: compact objects not magnified)")
    parser.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                        help="moco.symmetric (default: the config's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", default="conv", help="encoder (--device cuda)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (--device cuda)")
    args = parser.parse_args()
    keep_freed_memory()  # as train() does
    torch.set_num_threads(args.threads)
    steps = 3 if args.quick else 25
    if args.device == "cuda":
        main_cuda(args, 5 if args.quick else 50)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "bench.h5", n=(steps + 1) * args.batch_size + 64)
        for objective in ("ae", "moco", "moco-ae"):
            rates = bench(store, objective, args.batch_size, steps, args.frame, args.aug_plus,
                          args.similarity, args.compact_size, args.symmetric)
            rows.append((objective, *rates))
    shown = TrainConfig()
    shown.model.frame = args.frame or shown.model.frame
    print(f"### bench_train ({datetime.date.today()})\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.threads} threads")
    print(f"- command: `python benchmarks/bench_train.py {' '.join(sys.argv[1:])}`")
    print("- default conv encoder/decoder, 4x64x64 stamps, latent 128, batch "
          f"{args.batch_size}, {steps} timed steps, frame {args.frame or TrainConfig().model.frame}, "
          f"similarity {args.similarity or shown.moco_similarity()}, "
          f"compact size {'default' if args.compact_size is None else args.compact_size}, "
          f"symmetric {TrainConfig().moco.symmetric if args.symmetric is None else args.symmetric}"
          f"{', aug+' if args.aug_plus else ''}\n")
    print("| objective | step images/s | data path images/s (in memory, the default) | data / step "
          "| data path images/s (from the file) | data / step | one-time load s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for objective, step_rate, memory_rate, file_rate, load in rows:
        print(f"| {objective} | {step_rate:.0f} | {memory_rate:.0f} | {memory_rate / step_rate:.1f}x "
              f"| {file_rate:.0f} | {file_rate / step_rate:.1f}x | {load:.2f} |")


if __name__ == "__main__":
    main()
