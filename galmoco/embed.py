"""Batched inference: the latent vector of every stamp of a packed store, written as a table.

The table holds the store's catalogue (``id``, ``ra``, ``dec`` and every other column), ``latent``
``(N, D)`` float32, optionally ``projection`` (the projection head's output) and, with
``transforms=True``, ``latent_<name>`` for each of the 7 non-identity symmetries of the square and
the 45-degree turn (:data:`galmoco.data.transforms.PLACEMENT_TRANSFORMS`), the input of similarity
placement. Table formats: :mod:`galmoco.io.tables`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from tqdm.auto import tqdm

from galmoco.cachekey import file_sha256, keyed_output
from galmoco.data.transforms import PLACEMENT_TRANSFORMS, apply_transform
from galmoco.distributed import resolve_device
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, read_catalog, store_fingerprint
from galmoco.io.tables import read_table, table_format, write_table

__all__ = [
    "embed_store",
    "embeddings_key",
    "load_checkpoint_model",
    "read_embeddings",
]


def load_checkpoint_model(checkpoint: str | Path | torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A ``GalaxyModel`` in eval mode from a checkpoint file, a run directory or a model object.

    Args:
        checkpoint: ``last.pt``-style file, a run directory (its ``checkpoints/last.pt`` is used), or an
            already loaded model (moved to ``device``).
        device: where the model runs.
    """
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint.to(device).eval()
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise GalmocoError(f"{path}: checkpoint not found")
    from galmoco.train.checkpoint import load_model  # torch-heavy training stack: only when needed

    return load_model(path, device=str(device)).eval()


def embeddings_key(checkpoint: str | Path, store: str | Path, transforms: bool) -> dict[str, object]:
    """What an embeddings table is computed from (recorded beside it, :mod:`galmoco.cachekey`): the
    checkpoint file's SHA-256 (a run directory means its ``checkpoints/last.pt``), the store's
    :func:`~galmoco.io.store.store_fingerprint` and whether the transformed copies are in it."""
    path = Path(checkpoint)
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise GalmocoError(f"{path}: checkpoint not found")
    return {"checkpoint_sha256": file_sha256(path), "store": store_fingerprint(store),
            "transforms": transforms}


def read_embeddings(path: str | Path) -> Table:
    """Read an embeddings table written by :func:`embed_store` (see :func:`galmoco.io.tables.read_table`)."""
    return read_table(path)


def _encode_all(
    model: torch.nn.Module, data: CutoutStore, dev: torch.device, transforms: bool, with_projection: bool,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Encode a :class:`~galmoco.io.store.CutoutStore` in contiguous slices; column name -> (N, D)."""
    n = len(data)
    if n == 0:
        raise GalmocoError(f"{data.path}: the store holds no stamps")
    names = ("latent",) + (tuple(f"latent_{t}" for t in PLACEMENT_TRANSFORMS) if transforms else ())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names + (("projection",) if with_projection else ())}
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    with torch.inference_mode(), autocast, tqdm(total=n, desc="embed", unit="img", disable=None) as bar:
        for start in range(0, n, batch_size):
            images = torch.from_numpy(data.read_batch(np.arange(start, min(n, start + batch_size)))).to(dev)
            latent = model.encode(images)
            parts["latent"].append(latent.float().cpu().numpy())
            if with_projection:
                parts["projection"].append(model.project(latent).float().cpu().numpy())
            if transforms:
                for t in PLACEMENT_TRANSFORMS:
                    copies = model.encode(apply_transform(images, t))
                    parts[f"latent_{t}"].append(copies.float().cpu().numpy())
            bar.update(images.shape[0])
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}


def embed_store(
    checkpoint: str | Path | torch.nn.Module,
    store: str | Path,
    out: str | Path,
    transforms: bool = False,
    with_projection: bool = False,
    batch_size: int = 256,
    device: str = "auto",
) -> Path:
    """Encode every stamp of a packed store and write the catalogue plus latent vectors.

    Reads the store in sorted contiguous slices of ``batch_size`` (memory is bounded by one batch),
    encodes under ``torch.inference_mode`` (bf16 autocast on CUDA), and writes atomically.

    Args:
        checkpoint: checkpoint file, run directory or loaded ``GalaxyModel``.
        store: packed HDF5 dataset (``galmoco pack`` / ``galmoco simulate``).
        out: output table; ``.parquet``, ``.fits`` or ``.h5``.
        transforms: also encode the 7 flipped/rotated copies (``latent_<name>`` columns).
        with_projection: also write the projection head's output (``projection``).
        batch_size: stamps per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns:
        The output path.
    """
    out = Path(out)
    table_format(out, vectors=True)
    if batch_size < 1:
        raise GalmocoError(f"--batch-size must be positive, got {batch_size}")
    dev = resolve_device(device)
    # the inputs, recorded beside the table (before loading: a checkpoint rewritten meanwhile is not
    # taken for the one embedded), so the analysis can tell whether it is current
    inputs = embeddings_key(checkpoint, store, transforms) if isinstance(checkpoint, str | Path) else None
    model = load_checkpoint_model(checkpoint, dev)
    with CutoutStore(store) as data:
        parts = _encode_all(model, data, dev, transforms, with_projection, batch_size)
    table = Table(read_catalog(store), copy=False)
    for key, chunks in parts.items():
        table[key] = chunks
    # short keys: they become FITS header cards
    source = str(checkpoint) if isinstance(checkpoint, str | Path) else "model"
    table.meta.update(CKPT=source, STORE=str(store))
    with keyed_output(out, inputs):
        return write_table(table, out)
