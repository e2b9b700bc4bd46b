"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts:

- ``model``: the :class:`~galmoco.models.GalaxyModel` state dict (normaliser, encoder, head, decoder);
- ``objective``: training-only state of the objective (MoCo: key encoder, ``queue.keys``, ``queue.ptr``);
- ``optimizer``, ``scheduler``: their state dicts;
- ``epoch`` (completed epochs), ``step`` (optimizer steps), ``batches_done`` (batches of the
  interrupted epoch, 0 after a full epoch);
- ``rng``: torch (CPU and CUDA), numpy, python and augmentation-generator states (see :func:`rng_state`);
- ``config``: the TrainConfig as a dict; ``bands`` (str), ``image_size`` (int), ``sky_sigma`` (list),
  ``queue_size`` (int), ``galmoco_version`` (str);
- ``contract``: the :class:`~galmoco.contract.DataContract` of the training data as a dict (bands
  in order, stamp size, pixel scale, units, zero point, normalisation, sky sigma). Checkpoints written
  before it existed still load: :func:`checkpoint_contract` derives what it can and warns.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmoco.config import TrainConfig, config_from_dict, config_to_dict
from galmoco.contract import DataContract
from galmoco.errors import GalmocoError
from galmoco.files import atomic_output
from galmoco.io.store import read_store_contract
from galmoco.models.galaxy import GalaxyModel

__all__ = ["check_store", "checkpoint_contract", "load_checkpoint", "load_model", "rng_state", "run_contract",
           "save_checkpoint", "set_rng_state"]

log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file in the same folder, then rename it over
    ``path`` (a crash never leaves a half-written checkpoint). Returns the path."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors naming the file.

    Raises:
        GalmocoError: when the file is missing or not a galmoco checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise GalmocoError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types, some with paragraphs of advice
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise GalmocoError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise GalmocoError(f"{path}: not a galmoco checkpoint (no model/config entries)")
    # what checkpoints of earlier versions lack or hold: model.frame (then stamps were read as given),
    # model.draw_frame (then the decoder drew in the encoder's frame), model.photometry (then the latent
    # had no photometric part), model.compact_size (then no object was magnified), augment.psf_change (a
    # training-only option that augment.seeing_scatter replaced)
    model = state["config"].setdefault("model", {})
    model.setdefault("frame", "none")
    model.setdefault("draw_frame", model["frame"])
    model.setdefault("photometry", False)
    model.setdefault("compact_size", 0.0)
    state["config"].get("augment", {}).pop("psf_change", None)
    return state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GalaxyModel:
    """The trained :class:`GalaxyModel` of a checkpoint, on ``device``, in eval mode.

    The model's ``contract`` attribute holds its :class:`~galmoco.contract.DataContract`.
    """
    state = load_checkpoint(path)
    config = config_from_dict(state["config"], where=str(path))
    # the checkpoint holds the run's full TrainConfig: the model is built from its model part
    model = GalaxyModel(config.model_config(), tuple(state["bands"]), state["image_size"], state["sky_sigma"])
    # a split-BN encoder has plain BN's state-dict keys and is plain BN in eval mode: no conversion
    model.load_state_dict(state["model"])
    model.contract = checkpoint_contract(state, path)
    return model.to(device).eval()


def run_contract(store_path: str | os.PathLike, config: TrainConfig) -> DataContract:
    """The contract a run records: the store's, plus the run's normalisation and sky sigma."""
    return read_store_contract(store_path).trained_with(config_to_dict(config.normalize), config.sky_sigma)


def checkpoint_contract(state: dict[str, Any], where: str | os.PathLike) -> DataContract:
    """The data contract of a loaded checkpoint; for one written before contracts existed, the bands,
    stamp size, normalisation and sky sigma it does record (pixel scale, units and zero point unknown,
    with a warning)."""
    if "contract" in state:
        return DataContract.from_dict(state["contract"])
    log.warning("%s records no data contract (written by galmoco %s): checking bands and stamp size only",
                where, state.get("galmoco_version", "before 0.1"))
    return DataContract(bands=state["bands"], stamp_size=int(state["image_size"]),
                        normalize=state["config"].get("normalize"), sky_sigma=tuple(state["sky_sigma"]))


def check_store(state: dict[str, Any], store_path: str | os.PathLike, where: str | os.PathLike,
                allow_size: bool = False) -> None:
    """Raise a one-line :class:`GalmocoError` unless the store holds the data the checkpoint was trained on
    (see :meth:`DataContract.check <galmoco.contract.DataContract.check>`)."""
    checkpoint_contract(state, where).check(read_store_contract(store_path), str(store_path), str(where),
                                            allow_size=allow_size)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from, as tensors/lists/ints (safe for ``weights_only``).

    Args:
        generator: the augmentation generator (on the training device).
    """
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is what we save)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss": py_state[2]},
        "augment": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only when CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    legacy = ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
              npst["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    generator.set_state(state["augment"].cpu())
