"""Embedding throughput on CPU: images/s of ``galmoco.embed.embed_store`` against a naive loop.

The model is a default-config ``GalaxyModel`` (``TrainConfig()``: conv encoder, 128-d latent),
untrained but seeded (throughput does not depend on the weights), on 64 x 64 griz stamps in a packed
store written as docs/architecture.md says (``write_store`` from ``bench_train.py``). Both sides run
in one process with the same torch threads and write the same parquet table:

- galmoco: ``embed_store(model, store, out)`` (contiguous batched reads, ``inference_mode``);
- baseline: one ``h5py`` read and one ``model.encode`` call per object, then ``write_table``.

The latent vectors of the two are asserted equal (to float32 rounding of batched vs single convs).

    python benchmarks/bench_embed.py [--quick] [--threads 2] [--batch-size 256] [--transforms]
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

import h5py
import numpy as np
import torch
from astropy.table import Table

from galmoco.config import TrainConfig
from galmoco.embed import embed_store, read_embeddings
from galmoco.io.store import read_catalog
from galmoco.io.tables import write_table
from galmoco.models.galaxy import GalaxyModel

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_store  # noqa: E402  (a sibling script, not a package)

BANDS = "griz"
SIZE = 64


def naive_embed(model: GalaxyModel, store: Path, out: Path) -> Path:
    """The baseline: per-object read and model call, then the same table as ``embed_store`` writes."""
    latents = []
    with torch.inference_mode(), h5py.File(store, "r") as h5:
        images = h5["images"]
        for i in range(images.shape[0]):
            latents.append(model.encode(torch.from_numpy(images[i][None]))[0].numpy())
    table = Table(read_catalog(store), copy=False)
    table["latent"] = np.stack(latents)
    return write_table(table, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 stamps instead of 2,048")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    parser.add_argument("--batch-size", type=int, default=256, help="embed_store batch size")
    parser.add_argument("--transforms", action="store_true",
                        help="galmoco side also embeds the 7 transformed copies (8x the work)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = 256 if args.quick else 2048
    config = TrainConfig()
    torch.manual_seed(0)
    model = GalaxyModel(config, tuple(BANDS), SIZE, [1.0] * len(BANDS)).eval()
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "bench.h5", n, size=SIZE, bands=BANDS)
        embed_store(model, store, Path(tmp) / "warm.parquet", batch_size=args.batch_size, device="cpu")
        t0 = time.perf_counter()
        embed_store(model, store, Path(tmp) / "ours.parquet", transforms=args.transforms,
                    batch_size=args.batch_size, device="cpu")
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive_embed(model, store, Path(tmp) / "naive.parquet")
        naive_s = time.perf_counter() - t0
        ours = np.asarray(read_embeddings(Path(tmp) / "ours.parquet")["latent"])
        naive = np.asarray(read_embeddings(Path(tmp) / "naive.parquet")["latent"])
    np.testing.assert_allclose(ours, naive, rtol=1e-4, atol=1e-4 * float(np.abs(naive).max()))

    images_ours = n * (8 if args.transforms else 1)
    print(f"### bench_embed ({'quick' if args.quick else 'full'})\n")
    print(f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores visible, torch threads {args.threads}; load average at start {load:.1f}")
    print(f"- date: {datetime.date.today()}; command: `python {' '.join(sys.argv)}`")
    print(f"- model: default TrainConfig ({config.model.arch}, widths {config.model.widths}, latent "
          f"{config.model.latent_dim}), {SIZE}x{SIZE} {BANDS} stamps, {n} objects\n")
    print("| method | images encoded | time (s) | images/s |")
    print("|---|---|---|---|")
    print(f"| galmoco embed_store (batch {args.batch_size}{', +7 transforms' if args.transforms else ''}) "
          f"| {images_ours} | {ours_s:.2f} | {images_ours / ours_s:.0f} |")
    print(f"| naive: per-object read + model call | {n} | {naive_s:.2f} | {n / naive_s:.0f} |")
    print(f"\nspeed-up (images/s): {images_ours / ours_s / (n / naive_s):.1f}x; latents equal: yes")


if __name__ == "__main__":
    main()
