"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts:

- ``model``: the :class:`~galmoco.models.GalaxyModel` state dict (normaliser, encoder, head, decoder);
- ``objective``: training-only state of the objective (MoCo: key encoder, ``queue.keys``, ``queue.ptr``);
- ``optimizer``, ``scheduler``: their state dicts;
- ``epoch`` (completed epochs), ``step`` (optimizer steps), ``batches_done`` (batches of the
  interrupted epoch, 0 after a full epoch);
- ``rng``: torch (CPU and CUDA), numpy, python and augmentation-generator states (see :func:`rng_state`);
- ``config``: the TrainConfig as a dict; ``bands`` (str), ``image_size`` (int), ``sky_sigma`` (list),
  ``queue_size`` (int), ``galmoco_version`` (str).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmoco.config import config_from_dict
from galmoco.errors import GalmocoError
from galmoco.files import atomic_output
from galmoco.models.galaxy import GalaxyModel

__all__ = ["load_checkpoint", "load_model", "rng_state", "save_checkpoint", "set_rng_state"]


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
    except Exception as exc:  # unpickling errors come in many types
        raise GalmocoError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise GalmocoError(f"{path}: not a galmoco checkpoint (no model/config entries)")
    # checkpoints written before model.frame existed were trained on stamps as given
    state["config"].setdefault("model", {}).setdefault("frame", "none")
    return state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GalaxyModel:
    """The trained :class:`GalaxyModel` of a checkpoint, on ``device``, in eval mode."""
    state = load_checkpoint(path)
    config = config_from_dict(state["config"], where=str(path))
    # the checkpoint holds the run's full TrainConfig: the model is built from its model part
    model = GalaxyModel(config.model_config(), tuple(state["bands"]), state["image_size"], state["sky_sigma"])
    # a split-BN encoder has plain BN's state-dict keys and is plain BN in eval mode: no conversion
    model.load_state_dict(state["model"])
    return model.to(device).eval()


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
