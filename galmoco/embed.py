"""Batched inference: the latent vector of every stamp of a packed store, written as a table.

The table holds the store's catalogue (``id``, ``ra``, ``dec`` and every other column), ``latent``
``(N, D)`` float32, optionally ``projection`` (the projection head's output) and, with
``transforms=True``, ``latent_<name>`` for each of the 7 non-identity symmetries of the square and
the 45-degree turn (:data:`galmoco.data.transforms.PLACEMENT_TRANSFORMS`), the input of similarity
placement. The format follows
the output suffix: ``.parquet`` (vector columns as fixed-size lists), ``.fits`` (vector columns as
``(N, D)`` array columns) or ``.h5``/``.hdf5`` (an astropy table at path ``embeddings``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from tqdm.auto import tqdm

from galmoco.data.transforms import PLACEMENT_TRANSFORMS, apply_transform
from galmoco.errors import GalmocoError
from galmoco.io.store import CutoutStore, read_catalog

__all__ = [
    "TABLE_SUFFIXES",
    "embed_store",
    "load_checkpoint_model",
    "read_embeddings",
    "resolve_device",
    "write_table",
]

#: output suffix -> astropy/pyarrow format
TABLE_SUFFIXES = {".parquet": "parquet", ".fits": "fits", ".h5": "hdf5", ".hdf5": "hdf5", ".csv": "csv"}
_HDF5_PATH = "embeddings"


def _format(path: Path) -> str:
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise GalmocoError(f"{path}: unknown table format; use one of {', '.join(TABLE_SUFFIXES)}")
    return fmt


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise GalmocoError(f"--device {device!r}: {exc}") from exc


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


def _vector_arrow(values: np.ndarray):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def write_table(table: Table, path: str | Path) -> Path:
    """Write a table atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        table: astropy table; 2-D columns become fixed-size lists in parquet, array columns in FITS/HDF5.
        path: output, format by suffix (see :data:`TABLE_SUFFIXES`).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            def native(name: str) -> np.ndarray:  # arrow refuses byte-swapped (e.g. FITS) arrays
                data = np.asarray(table[name])
                return data.astype(data.dtype.newbyteorder("=")) if data.dtype.byteorder == ">" else data

            cols = {name: _vector_arrow(native(name)) if table[name].ndim == 2 else pa.array(native(name))
                    for name in table.colnames}
            meta = {str(k): str(v) for k, v in table.meta.items()}
            pq.write_table(pa.table(cols, metadata=meta), tmp)
        elif fmt == "hdf5":
            os.remove(tmp)  # h5py refuses to append a table to an empty non-HDF5 file
            table.write(tmp, format="hdf5", path=_HDF5_PATH, serialize_meta=True)
        else:
            table.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path


def read_embeddings(path: str | Path) -> Table:
    """Read a table written by :func:`write_table` / :func:`embed_store` (parquet, FITS, HDF5 or CSV).

    Returns:
        astropy Table; vector columns as ``(N, D)`` float32 arrays, string columns as ``str``.
    """
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise GalmocoError(f"{path}: no such file")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        at = pq.read_table(path)
        out = Table()
        for name, col in zip(at.column_names, at.columns, strict=True):
            col = col.combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                out[name] = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                out[name] = np.array(col.to_pylist(), dtype=str)  # not an object array: FITS-writable
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        out.meta.update({k.decode(): v.decode() for k, v in (at.schema.metadata or {}).items()})
        return out
    table = Table.read(path, format=fmt, path=_HDF5_PATH) if fmt == "hdf5" else Table.read(path, format=fmt)
    for name in table.colnames:  # FITS is big-endian and may hand strings back as bytes
        col = np.asarray(table[name])
        if col.dtype.kind == "S":
            table[name] = np.char.decode(col, "utf-8")
        elif not col.dtype.isnative:
            table[name] = col.astype(col.dtype.newbyteorder("="))
    return table


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
    _format(out)
    if batch_size < 1:
        raise GalmocoError(f"--batch-size must be positive, got {batch_size}")
    dev = resolve_device(device)
    model = load_checkpoint_model(checkpoint, dev)
    with CutoutStore(store) as data:
        parts = _encode_all(model, data, dev, transforms, with_projection, batch_size)
    table = Table(read_catalog(store), copy=False)
    for key, chunks in parts.items():
        table[key] = chunks
    # short keys: they become FITS header cards
    source = str(checkpoint) if isinstance(checkpoint, str | Path) else "model"
    table.meta.update(CKPT=source, STORE=str(store))
    return write_table(table, out)
