"""Batched inference: the latent vector of every stamp of a packed store, written as a table.

The table holds the store's catalogue (``id``, ``ra``, ``dec`` and every other column), ``latent``
``(N, D)`` float32, optionally ``projection`` (the projection head's output), ``stamp_snr`` (the
aperture signal-to-noise of each stamp, :func:`stamp_snr`) and, with ``transforms=True``,
``latent_<name>`` for each of the 7 non-identity symmetries of the square, the turns by arbitrary
angles and ``rotrand`` (:func:`galmoco.data.transforms.placement_transforms`; the random angle of each
galaxy in ``angle_rotrand``, degrees), the input of similarity placement; with the projection too,
``projection_<name>`` for every copy. Table formats: :mod:`galmoco.io.tables`.

The store may be several files read as one dataset (:class:`galmoco.io.storeset.StoreSet`). Under
``torchrun`` each of the W processes embeds a contiguous shard of the rows and writes its own table,
``<out stem>.rank<r>-of-<W><suffix>``; rank 0 then writes ``out`` as a manifest table (``file``,
``first_row``, ``n_rows``) that :func:`read_embeddings` reads as the whole table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table, vstack
from tqdm.auto import tqdm

from galmoco.cachekey import file_sha256, keyed_output
from galmoco.contract import DataContract
from galmoco.data.transforms import (
    DEFAULT_ANGLES,
    RANDOM_ROTATION,
    SYMMETRIES,
    apply_symmetry,
    apply_transform,
    border_sky,
    galaxy_seeds,
    placement_transforms,
    random_angles,
)
from galmoco.distributed import detect_env, init_distributed, resolve_device, teardown
from galmoco.errors import GalmocoError
from galmoco.io.store import store_fingerprint
from galmoco.io.storeset import StoreSet
from galmoco.io.tables import read_table, table_format, write_table
from galmoco.memory import keep_freed_memory

__all__ = [
    "MANIFEST_COLUMNS",
    "embed_cutouts",
    "embed_store",
    "embed_table",
    "encode_images",
    "embeddings_key",
    "load_checkpoint_model",
    "model_contract",
    "read_embeddings",
    "shard_path",
    "stamp_snr",
]

#: the columns of a sharded embedding's manifest table
MANIFEST_COLUMNS = ("file", "first_row", "n_rows")


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


def model_contract(model: torch.nn.Module) -> DataContract:
    """A loaded model's data contract (its ``contract`` attribute, set by
    :func:`galmoco.train.checkpoint.load_model`; else its bands and stamp size)."""
    contract = getattr(model, "contract", None)
    return contract if contract is not None else DataContract("".join(model.bands), model.image_size)


def shard_path(out: str | Path, rank: int, world: int) -> Path:
    """The table that rank ``rank`` of ``world`` writes for output ``out``."""
    out = Path(out)
    suffix = "".join(out.suffixes[-1:])
    return out.with_name(f"{out.name[:len(out.name) - len(suffix)]}.rank{rank}-of-{world}{suffix}")


def embeddings_key(checkpoint: str | Path, store: str | Path | Sequence[str | Path],
                   transforms: bool) -> dict[str, object]:
    """What an embeddings table is computed from (recorded beside it, :mod:`galmoco.cachekey`): the
    checkpoint file's SHA-256 (a run directory means its ``checkpoints/last.pt``), each store file's
    :func:`~galmoco.io.store.store_fingerprint` and whether the transformed copies are in it."""
    path = Path(checkpoint)
    path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise GalmocoError(f"{path}: checkpoint not found")
    paths = [store] if isinstance(store, str | Path) else list(store)
    return {"checkpoint_sha256": file_sha256(path), "store": [store_fingerprint(p) for p in paths],
            "transforms": transforms}


def read_embeddings(path: str | Path) -> Table:
    """Read an embeddings table written by :func:`embed_store` (see :func:`galmoco.io.tables.read_table`);
    a sharded run's manifest is read as the concatenation of its shards, in row order."""
    table = read_table(path)
    if tuple(table.colnames) != MANIFEST_COLUMNS:
        return table
    parts = []
    for row in table:
        part = read_table(Path(path).parent / str(row["file"]))
        if len(part) != int(row["n_rows"]):
            raise GalmocoError(f"{path}: shard {row['file']} has {len(part)} rows, the manifest says "
                               f"{int(row['n_rows'])}")
        parts.append(part)
    out = vstack(parts, join_type="exact", metadata_conflicts="silent")
    out.meta.update(parts[0].meta)
    return out


def stamp_snr(images: torch.Tensor) -> torch.Tensor:
    """Aperture signal-to-noise of each stamp's central object, all bands together.

    The flux inside a circle of radius ``H / 4`` about the stamp centre, less each band's sky level,
    summed over bands, over the noise of that sum for sky-dominated pixels:
    ``S/N = sum_b sum_ap (I - m_b) / sqrt(n_ap sum_b sigma_b^2)``, with ``m_b`` and ``sigma_b`` the
    median and MAD sigma of the stamp's border (:func:`galmoco.data.transforms.border_sky`).

    Args:
        images: ``(N, C, H, W)`` raw stamps (any flux units).

    Returns:
        ``(N,)`` float32 (NaN where the border carries no noise).
    """
    n, c, h, w = images.shape
    median, sigma = border_sky(images.float())
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    aperture = (x**2 + y**2 <= (min(h, w) / 4) ** 2).to(images.device)
    flux = ((images.float() - median[..., None, None]) * aperture).sum(dim=(1, 2, 3))
    noise = torch.sqrt(aperture.sum() * (sigma**2).sum(dim=1))
    return torch.where(noise > 0, flux / noise, torch.full_like(flux, float("nan")))


def encode_images(model: torch.nn.Module, images: np.ndarray | torch.Tensor, dev: str | torch.device,
                  transforms: Sequence[str] = (), with_projection: bool = False,
                  rows: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of ``(N, B, H, W)`` stamps in the store's flux units; column name -> ``(N, ...)``.

    Runs under ``torch.inference_mode`` (bf16 autocast on CUDA).

    Args:
        model: a loaded ``GalaxyModel``.
        images: the stamps.
        dev: where the model runs (``"cpu"``, ``"cuda:0"`` or a ``torch.device``).
        transforms: names of the transformed copies to encode (``latent_<name>``,
            :func:`galmoco.data.transforms.placement_transforms`).
        with_projection: also the projection head's output (``projection``, ``projection_<name>``).
        rows: the stamps' catalogue rows, which seed each galaxy's random angle and corner noise
            (default ``0..N-1``).
        seed: the run's seed for those.

    Returns:
        ``latent`` (and ``projection``) float32 ``(N, D)``, ``stamp_snr`` ``(N,)``, the copies'
        columns, and ``angle_rotrand`` (degrees) when ``rotrand`` is among ``transforms``.
    """
    dev = torch.device(dev)
    cuda = dev.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    out: dict[str, np.ndarray] = {}

    def encode(suffix: str, normalized: torch.Tensor) -> None:
        latent = model.encode_normalized(normalized)
        out["latent" + suffix] = latent.float().cpu().numpy()
        if with_projection:
            out["projection" + suffix] = model.project(latent).float().cpu().numpy()

    with torch.inference_mode(), autocast:
        images = torch.as_tensor(images).to(dev)
        normalized = model.normalize(images)
        encode("", normalized)
        out["stamp_snr"] = stamp_snr(images).cpu().numpy()
        if transforms:
            seeds = galaxy_seeds(seed, np.arange(len(images)) if rows is None else rows)
            angles = random_angles(seeds) if RANDOM_ROTATION in transforms else None
            if angles is not None:
                out[f"angle_{RANDOM_ROTATION}"] = angles.numpy()
            for t in transforms:
                # a flip or quarter turn only moves pixels, so it commutes with the per-pixel
                # normalisation: the normalised stamps are reused (the asinh is most of its cost)
                encode(f"_{t}", apply_symmetry(normalized, t) if t in SYMMETRIES
                       else model.normalize(apply_transform(images, t, seeds, angles)))
    return out


def read_cutouts(paths: Sequence[str | Path], contract: DataContract, pad: bool = True,
                 allow_size: bool = False) -> tuple[np.ndarray, Table]:
    """FITS cutouts read as ``galmoco pack`` reads them, checked against a model's contract.

    Args:
        paths: DESaccess POSDIR folders, band files or Legacy Survey cubes (see
            :func:`galmoco.io.fits.read_cutout`).
        contract: the model's; its bands (in order) and stamp size are read, the rest checked.
        pad: pad cutouts trimmed at a tile edge (weight 0), as ``pack --pad``; else they are an error.
        allow_size: read each cutout at its own size (all must then share one size).

    Returns:
        ``(images (N, B, H, W) float32 in the files' flux units, catalogue)`` with the store's columns
        ``id``, ``ra``, ``dec``, ``source``, ``n_bad_pixels``, ``padded``.
    """
    from galmoco.io.fits import read_cutout

    if not paths:
        raise GalmocoError("no cutout files given")
    images, rows = [], []
    for path in paths:
        size = None if allow_size else contract.stamp_size
        cut = read_cutout(path, bands=contract.bands, size=size, pad=pad)
        got = DataContract("".join(cut.bands), cut.image.shape[-2:], cut.pixel_scale, cut.zeropoint,
                           cut.units)
        contract.check(got, str(path), allow_size=allow_size)
        if images and cut.image.shape != images[0].shape:
            raise GalmocoError(f"{path}: stamp shape {cut.image.shape} differs from {paths[0]}'s "
                               f"{images[0].shape}; read cutouts of one size at a time")
        images.append(cut.image)
        rows.append((cut.id, cut.ra, cut.dec, cut.source, cut.n_bad_pixels, cut.padded))
    catalog = Table(rows=rows, names=("id", "ra", "dec", "source", "n_bad_pixels", "padded"))
    return np.stack(images).astype(np.float32), catalog


def embed_cutouts(model: torch.nn.Module, paths: Sequence[str | Path], batch_size: int = 256,
                  device: str | torch.device = "cpu", pad: bool = True, allow_size: bool = False,
                  transforms: Sequence[str] = (), with_projection: bool = False, seed: int = 0) -> Table:
    """The embeddings table of FITS cutouts, equal to ``galmoco pack`` followed by :func:`embed_store`.

    Args:
        model: a loaded ``GalaxyModel`` (its contract decides bands, size and the checks).
        paths: cutout files or DESaccess folders.
        batch_size: stamps per forward pass.
        device: where the model runs.
        pad, allow_size: see :func:`read_cutouts`.
        transforms, with_projection, seed: extra columns, see :func:`encode_images`.

    Returns:
        The catalogue (``id``, ``ra``, ``dec``...) with ``latent`` and the requested extra columns.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    paths, parts = list(paths), []
    for start in range(0, max(1, len(paths)), batch_size):
        images, catalog = read_cutouts(paths[start:start + batch_size], model_contract(model), pad,
                                       allow_size)
        rows = np.arange(start, start + len(images))
        encoded = encode_images(model, images, dev, transforms, with_projection, rows, seed)
        for key, value in encoded.items():
            catalog[key] = value
        parts.append(catalog)
    return parts[0] if len(parts) == 1 else vstack(parts, join_type="exact")


def _encode_all(
    model: torch.nn.Module, data: StoreSet, dev: torch.device, transforms: Sequence[str],
    with_projection: bool, batch_size: int, rows: range, seed: int,
) -> dict[str, np.ndarray]:
    """Encode rows ``rows`` of a :class:`~galmoco.io.storeset.StoreSet` in contiguous slices; column
    name -> ``(N, ...)`` (see :func:`encode_images`)."""
    if len(data) == 0:
        raise GalmocoError(f"{data.path}: the store holds no stamps")
    parts: dict[str, list[np.ndarray]] = {}
    with tqdm(total=len(rows), desc="embed", unit="img", disable=None) as bar:
        for start in range(rows.start, rows.stop, batch_size):
            stop = min(rows.stop, start + batch_size)
            images = data.read_rows(start, stop)
            encoded = encode_images(model, images, dev, transforms, with_projection, np.arange(start, stop),
                                    seed)
            for key, value in encoded.items():
                parts.setdefault(key, []).append(value)
            bar.update(images.shape[0])
    return {k: np.concatenate(v).astype(np.float32) if v else np.empty((0, 0), np.float32)
            for k, v in parts.items()}


def embed_table(
    model: torch.nn.Module, stores: Sequence[str | Path], dev: torch.device, batch_size: int = 256,
    allow_size: bool = False, transforms: Sequence[str] = (), with_projection: bool = False,
    source: str = "model", shard: tuple[int, int] = (0, 1), seed: int = 0,
) -> Table:
    """The embeddings table of one or more stores read as one (rows of shard ``(rank, world)`` only).

    Args:
        model: a loaded ``GalaxyModel``; stores must meet its data contract.
        stores: store files, read in this order.
        dev: where the model runs.
        batch_size, allow_size, with_projection: see :func:`embed_store`.
        transforms, seed: the copies to encode and their seed, see :func:`encode_images`.
        source: names the model in messages and in the table's ``CKPT`` metadata.
        shard: ``(rank, world)``: rows ``N*rank//world`` up to ``N*(rank+1)//world``.

    Returns:
        The catalogue rows with ``latent`` (and the requested extra columns).
    """
    rank, world = shard
    with StoreSet(stores) as data:
        model_contract(model).check(data.contract, str(data.path), source, allow_size=allow_size)
        n = len(data)
        rows = range(n * rank // world, n * (rank + 1) // world)
        parts = _encode_all(model, data, dev, transforms, with_projection, batch_size, rows, seed)
        table = Table(data.catalog(rows.start, rows.stop), copy=False)
    for key, chunks in parts.items():
        table[key] = chunks
    # short keys: they become FITS header cards
    table.meta.update(CKPT=source, STORE=",".join(str(p) for p in stores), SEED=seed)
    return table


def embed_store(
    checkpoint: str | Path | torch.nn.Module,
    store: str | Path | Sequence[str | Path],
    out: str | Path,
    transforms: bool = False,
    with_projection: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    allow_size: bool = False,
    angles: Sequence[float] = DEFAULT_ANGLES,
    random_rotation: bool = True,
    seed: int = 0,
) -> Path:
    """Encode every stamp of a packed store and write the catalogue plus latent vectors.

    Reads the store in contiguous slices of ``batch_size`` (memory is bounded by one batch and the
    output columns), encodes under ``torch.inference_mode`` (bf16 autocast on CUDA), and writes
    atomically. The store must hold the data the model was trained on (its data contract: bands in
    order, stamp size, units, zero point, pixel scale). Under ``torchrun`` each process embeds one
    contiguous shard (see the module docstring).

    Args:
        checkpoint: checkpoint file, run directory or loaded ``GalaxyModel``.
        store: packed HDF5 dataset (``galmoco pack`` / ``galmoco simulate``), or several read as one.
        out: output table; ``.parquet``, ``.fits`` or ``.h5``.
        transforms: also encode the transformed copies (``latent_<name>`` columns): the 7 D4 elements,
            a turn by each of ``angles`` and, with ``random_rotation``, ``rotrand``.
        with_projection: also write the projection head's output (``projection``, and
            ``projection_<name>`` for each copy).
        batch_size: stamps per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        allow_size: accept stamps of another size than the model was trained on.
        angles: turns (degrees, counter-clockwise) besides the D4 elements (``rot<angle>`` columns).
        random_rotation: also a uniform random angle per galaxy (``rotrand``; angle in ``angle_rotrand``).
        seed: seeds the random angles and the sky noise that fills turned corners (per galaxy and
            catalogue row, so the same whatever ``batch_size`` or the number of processes).

    Returns:
        The output path (under ``torchrun``: the manifest).

    Raises:
        GalmocoError: a bad option, an unreadable store, or data that breaks the model's contract.
    """
    out = Path(out)
    table_format(out, vectors=True)
    if batch_size < 1:
        raise GalmocoError(f"--batch-size must be positive, got {batch_size}")
    keep_freed_memory()
    env = detect_env()
    dev = init_distributed(device).device if env.world_size > 1 else resolve_device(device)
    source = str(checkpoint) if isinstance(checkpoint, str | Path) else "model"
    paths = [store] if isinstance(store, str | Path) else list(store)
    # the inputs, recorded beside the table (before loading: a checkpoint rewritten meanwhile is not
    # taken for the one embedded), so the analysis can tell whether it is current
    inputs = embeddings_key(checkpoint, paths, transforms) if isinstance(checkpoint, str | Path) else None
    model = load_checkpoint_model(checkpoint, dev)
    names = placement_transforms(angles, random_rotation) if transforms else ()
    table = embed_table(model, paths, dev, batch_size, allow_size, names, with_projection, source,
                        (env.rank, env.world_size), seed)
    if env.world_size == 1:
        with keyed_output(out, inputs):
            return write_table(table, out)
    write_table(table, shard_path(out, env.rank, env.world_size))
    import torch.distributed as dist

    dist.barrier()  # every shard is on disk before the manifest names it
    if env.rank == 0:
        with StoreSet(paths) as data:
            n = len(data)
        bounds = [n * r // env.world_size for r in range(env.world_size + 1)]
        manifest = Table({"file": [shard_path(out, r, env.world_size).name for r in range(env.world_size)],
                          "first_row": bounds[:-1], "n_rows": np.diff(bounds)})
        with keyed_output(out, inputs):
            write_table(manifest, out)
    teardown()
    return out
