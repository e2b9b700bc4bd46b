"""The Python API: from a trained run to vectors, reconstructions and similar galaxies in a few lines.

In the examples, ``run_dir`` is a training run (``galmoco train -o run_dir``), ``fits_paths`` a list of
DESaccess cutout folders, ``store_path`` a packed store and ``index_dir`` an index (``galmoco index``):

>>> import galmoco
>>> model = galmoco.load(run_dir)
>>> model.contract.bands, model.contract.stamp_size
('griz', (16, 16))
>>> table = model.embed(fits_paths)            # read, cut and normalised as pack + embed do
>>> list(table.colnames[:3]), table["latent"].shape
(['id', 'ra', 'dec'], (4, 8))
>>> model.embed(store_path)["latent"].shape    # a packed store (or a list of stores read as one)
(4, 8)
>>> images = np.zeros((2, 4, 16, 16), np.float32)
>>> model.embed(images).shape, model.reconstruct(images).shape
((2, 8), (2, 4, 16, 16))
>>> model.embed(np.zeros((2, 3, 16, 16)))
Traceback (most recent call last):
...
galmoco.errors.GalmocoError: array (2, 3, 16, 16): expected (N, 4 bands griz, H, W) as ... was trained on
>>> answer = model.neighbours(fits_paths[:1], index_dir, k=2)
>>> answer["rank"].tolist()
[1, 2]

Every call checks the data against the model's data contract (:class:`galmoco.contract.DataContract`:
bands in order, stamp size, flux units, zero point, pixel scale) and fails with one line naming both
values. torch, astropy and faiss are imported when first needed, so ``import galmoco`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from galmoco.contract import DataContract
from galmoco.errors import GalmocoError

if TYPE_CHECKING:
    import torch
    from astropy.table import Table

    from galmoco.similarity.index import Index

__all__ = ["TrainedModel", "load"]

_STORE_SUFFIXES = (".h5", ".hdf5")


def _is_store(path: str | Path) -> bool:
    return Path(path).suffix.lower() in _STORE_SUFFIXES and Path(path).is_file()


class TrainedModel:
    """A trained galmoco model, ready for inference (see :func:`load`).

    Attributes:
        network: the ``GalaxyModel`` (a ``torch.nn.Module`` in eval mode).
        contract: what it was trained on (:class:`~galmoco.contract.DataContract`).
        source: the checkpoint file it came from; device: where it runs.

    Example (``network``: a ``GalaxyModel`` built or loaded in code):
        >>> TrainedModel(network).embed(np.zeros((1, 4, 16, 16))).shape
        (1, 8)
    """

    def __init__(self, network: torch.nn.Module, source: str | Path = "model", device: str = "cpu"):
        from galmoco.distributed import resolve_device
        from galmoco.embed import model_contract

        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.contract: DataContract = model_contract(network)
        self.source = str(source)

    def __repr__(self) -> str:
        c = self.contract
        return (f"TrainedModel({self.source!r}: {self.network.config.objective}, bands {c.bands}, "
                f"{c.stamp_size[0]}x{c.stamp_size[1]} stamps, latent {self.network.latent_dim})")

    def _check_array(self, images: Any, allow_size: bool) -> np.ndarray:
        array = np.asarray(images, dtype=np.float32)
        bands = self.contract.bands
        if array.ndim != 4 or array.shape[1] != len(bands):
            raise GalmocoError(f"array {array.shape}: expected (N, {len(bands)} bands {bands}, H, W) as "
                               f"{self.source} was trained on")
        # an array carries no band names or units: only the stamp size can be checked
        self.contract.check(DataContract(bands, array.shape[-2:]), f"array {array.shape}", self.source,
                            allow_size=allow_size)
        return array

    def embed(self, x: Any, batch_size: int = 256, allow_size: bool = False, transforms: bool = False,
              with_projection: bool = False) -> Table | np.ndarray:
        """Latent vectors of stores, FITS cutouts or an array.

        Args:
            x: a packed store (``.h5``) or a list of them (read as one); a list of FITS cutout paths
                (DESaccess folders, band files, Legacy Survey cubes), read and cut exactly as
                ``galmoco pack --pad`` reads them; or an array ``(N, B, H, W)`` in the store's flux units.
            batch_size: stamps per forward pass.
            allow_size: accept another stamp size than the model was trained on.
            transforms, with_projection: the extra columns of ``galmoco embed --transforms
                --projection`` (tables only; the default turns, seed 0).

        Returns:
            For stores and FITS files, the embeddings table (catalogue columns and ``latent``, as
            ``galmoco embed`` writes); for an array, the ``(N, latent_dim)`` float32 vectors.
        """
        from galmoco.data.transforms import placement_transforms
        from galmoco.embed import embed_cutouts, embed_table, encode_images

        if isinstance(x, np.ndarray) or type(x).__name__ == "Tensor":
            array = self._check_array(x, allow_size)
            return np.concatenate([encode_images(self.network, array[s:s + batch_size], self.device)["latent"]
                                   for s in range(0, max(len(array), 1), batch_size)])
        paths = [x] if isinstance(x, str | Path) else list(x)
        names = placement_transforms() if transforms else ()
        if paths and all(_is_store(p) for p in paths):
            return embed_table(self.network, paths, self.device, batch_size, allow_size, names,
                               with_projection, self.source)
        return embed_cutouts(self.network, paths, batch_size, self.device, allow_size=allow_size,
                             transforms=names, with_projection=with_projection)

    def reconstruct(self, x: Any, batch_size: int = 256, allow_size: bool = False) -> np.ndarray:
        """The decoder's reconstruction of each stamp, in the input's flux units.

        Args:
            x: an array ``(N, B, H, W)`` in the store's flux units, or FITS cutout paths.

        Returns:
            ``(N, B, H, W)`` float32.

        Raises:
            GalmocoError: for a model without a decoder (objective ``moco``).
        """
        import torch

        if isinstance(x, np.ndarray) or type(x).__name__ == "Tensor":
            images = self._check_array(x, allow_size)
        else:
            from galmoco.embed import read_cutouts

            images, _ = read_cutouts([x] if isinstance(x, str | Path) else list(x), self.contract,
                                     allow_size=allow_size)
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                batch = torch.from_numpy(images[s:s + batch_size]).to(self.device)
                drawn = self.network.reconstruct(batch)
                out.append(self.network.normalizer.inverse(drawn).float().cpu().numpy())
        return np.concatenate(out)

    def neighbours(self, x: Any, index: Index | str | Path, k: int = 10, allow_size: bool = False) -> Table:
        """The ``k`` most similar indexed galaxies of each input (see :meth:`embed` for ``x``).

        Args:
            index: an index folder from ``galmoco index`` built on this model's embeddings.

        Returns:
            The table of :func:`galmoco.similarity.query.search_vectors` (``query``, ``rank``, ``id``,
            ``ra``, ``dec``, ``distance``).
        """
        from galmoco.similarity.query import search_vectors

        embedded = self.embed(x, allow_size=allow_size)
        if isinstance(embedded, np.ndarray):
            return search_vectors(index, embedded, k)
        return search_vectors(index, np.asarray(embedded["latent"]), k, [str(i) for i in embedded["id"]])


def load(run: str | Path, device: str = "cpu") -> TrainedModel:
    """A trained model from a run directory (its ``checkpoints/last.pt``) or a checkpoint file.

    Args:
        run: run directory or ``.pt`` checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Returns:
        A :class:`TrainedModel`.

    Raises:
        GalmocoError: a missing or unreadable checkpoint (one line).
    """
    path = Path(run)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    from galmoco.train.checkpoint import load_model

    return TrainedModel(load_model(path), path, device)

