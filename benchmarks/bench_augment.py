"""Cost of MoCo's two augmented views per call: ``GalaxyAugment.views`` (the pair, then both views).

Times the default recipe against the previous defaults (both views sharing the stored noise, a random
rotation per view, extra noise and a blur on half the views; then the recorrupted pair with the blur),
in one process, on ``(N, 4, S, S)`` float32 stamps of sky-like noise (the cost does not depend on the
content). Median of ``--repeats`` timed calls after one warm-up; the ratio is against the first recipe,
in the same run.

    python benchmarks/bench_augment.py [--batch 128] [--size 64] [--threads 2] [--repeats 20] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from galmoco.data.augment import AugmentConfig, GalaxyAugment

SKY = (2.0, 2.6, 4.6, 8.8)
#: name -> recipe; the first is the baseline of the ratios
RECIPES = {
    "previous default (shared noise, rotation, extra noise p 0.5, blur p 0.5)":
        AugmentConfig(rotate=True, split_noise=False, noise_prob=0.5, blur_prob=0.5, seeing_scatter=0.0),
    "last round's default in the pose frame (recorrupted pair, no rotation, blur p 0.5)":
        AugmentConfig(rotate=False, blur_prob=0.5, seeing_scatter=0.0),
    "default in the pose frame (recorrupted pair, no rotation, seeing change in place of the blur)":
        AugmentConfig(rotate=False),
    "default with frame d4/none (recorrupted pair, rotation, seeing change)": AugmentConfig(rotate=True),
}


def time_pair(config: AugmentConfig, images: torch.Tensor, repeats: int) -> float:
    """Median seconds of one augmented pair of ``images``."""
    augment = GalaxyAugment(config, SKY)
    generator = torch.Generator().manual_seed(0)
    augment.views(images, generator)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        augment.views(images, generator)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="stamps per batch (2x views)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    args = parser.parse_args()
    args.repeats = 5 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    images = torch.randn(args.batch, len(SKY), args.size, args.size) * torch.tensor(SKY)[:, None, None]
    print(f"### bench_augment ({datetime.date.today()})\n")
    print(f"- machine: {platform.platform()}, {args.threads} threads, torch {torch.__version__}")
    shape = f"{len(SKY)}x{args.size}x{args.size}"
    print(f"- {2 * args.batch} views of {shape} per call, median of {args.repeats}\n")
    print("| recipe | ms per call | views/s | vs previous default |")
    print("|---|---:|---:|---:|")
    base = None
    for name, config in RECIPES.items():
        seconds = time_pair(config, images, args.repeats)
        base = base or seconds
        print(f"| {name} | {1e3 * seconds:.1f} | {2 * args.batch / seconds:.0f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
