"""``galmoco embed`` under ``torchrun --nproc_per_node=2`` against one process, on the CPU.

A store of N = 4,000 (``--quick``: 1,000) 4x64x64 stamps and an untrained model of the default
architecture; both runs are whole ``galmoco embed`` commands (start-up included), timed by wall clock.
The single process uses 2 torch threads, each of the 2 ranks 1 thread, so both use the same 2 cores.
The vectors are compared (max absolute difference).

Run: ``python benchmarks/bench_embed_torchrun.py [--quick]``. Prints a Markdown snippet.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galmoco.config import TrainConfig, config_to_dict
from galmoco.embed import read_embeddings
from galmoco.io.store import read_store_contract, write_store
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import save_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 1000 if args.quick else 4000
    root = Path(tempfile.mkdtemp(prefix="bench_embed_torchrun_"))
    rng = np.random.default_rng(0)
    store = write_store(root / "s.h5", rng.normal(0, 1, (n, 4, 64, 64)).astype(np.float32))
    config = TrainConfig()
    model = GalaxyModel(config, tuple("griz"), 64, [1.0] * 4)
    contract = read_store_contract(store).trained_with(config_to_dict(config.normalize), (1.0,) * 4)
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "bands": "griz",
                     "image_size": 64, "sky_sigma": [1.0] * 4, "contract": contract.to_dict()},
                    root / "run" / "checkpoints" / "last.pt")
    embed = ["-m", "galmoco", "embed", str(root / "run"), str(store), "--device", "cpu"]
    runs = {"one process, 2 threads": ([sys.executable, *embed, "-o", str(root / "one.parquet")], "2"),
            "torchrun, 2 processes x 1 thread": (
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *embed,
                 "-o", str(root / "two.parquet")], "1")}
    wall = {}
    for name, (cmd, threads) in runs.items():
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": threads})
        wall[name] = time.perf_counter() - t0
    one, two = (np.asarray(read_embeddings(root / f"{k}.parquet")["latent"]) for k in ("one", "two"))
    print(f"<!-- bench_embed_torchrun: {datetime.date.today()} {platform.platform()} "
          f"torch {torch.__version__}, "
          f"{os.cpu_count()} cores; command: python benchmarks/bench_embed_torchrun.py "
          f"{' '.join(sys.argv[1:])} -->")
    print(f"| galmoco embed, N = {n:,} 4x64x64, default model, CPU | wall (start-up included) | images/s |")
    print("|---|---|---|")
    for name, seconds in wall.items():
        print(f"| {name} | {seconds:.1f} s | {n / seconds:,.0f} |")
    first, second = wall.values()
    print(f"| ratio (torchrun / one process throughput) | {first / second:.2f}x | max abs difference of the "
          f"vectors {np.abs(one - two).max():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
