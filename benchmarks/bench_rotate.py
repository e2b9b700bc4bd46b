"""Speed of ``galmoco.data.transforms.rotate`` (three Fourier shears in a sky frame) on batches of stamps.

Times one call on ``(N, 4, S, S)`` float32 stamps for a single angle (the embed path) and for one
angle per stamp with per-galaxy seeds (``rotrand``), against ``torch.nn.functional.grid_sample``
bilinear (what the training augmentation used before: it smooths the sky noise and does not conserve
flux), on CPU with the given threads and on CUDA when present. Median of ``--repeats`` timed calls
after one warm-up.

    python benchmarks/bench_rotate.py [--batch 256] [--size 64] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from galmoco.data.transforms import galaxy_seeds, random_angles, rotate


def _bilinear(images: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=images.dtype, device=images.device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _time(fn, repeats: int, cuda: bool) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    seeds = galaxy_seeds(0, np.arange(args.batch))
    angles = random_angles(seeds)
    print(f"batch {args.batch} x 4 x {args.size} x {args.size}, {args.threads} CPU threads; "
          "median seconds per call")
    for device in devices:
        x = torch.randn(args.batch, 4, args.size, args.size, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        rows = {
            "rotate 30 deg (one generator)": (rotate, (x, 30.0), {"generator": generator}),
            "rotate per-stamp angles, per-galaxy seeds": (rotate, (x, angles, seeds), {}),
            "bilinear grid_sample 30 deg": (_bilinear, (x, 30.0), {}),
        }
        for name, (fn, fn_args, fn_kwargs) in rows.items():
            seconds = _time(lambda f=fn, a=fn_args, k=fn_kwargs: f(*a, **k), args.repeats, device == "cuda")
            print(f"{device:5s} {name:45s} {seconds:8.4f} s  ({args.batch / seconds:9.0f} stamps/s)")


if __name__ == "__main__":
    main()
