"""Training: the single-device loop, objectives, checkpoints and the kNN monitor.

``train``, ``RunResult`` and ``load_model`` are imported on first access, so importing a light
submodule (e.g. ``galmoco.distributed`` from ``galmoco.models``) does not pull in the loop.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunResult", "load_model", "train"]

_LAZY = {"RunResult": "galmoco.train.loop", "train": "galmoco.train.loop",
         "load_model": "galmoco.train.checkpoint"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'galmoco.train' has no attribute {name!r}")
