"""Run by ``torchrun`` in ``test_distributed_train``: every rank trains, then saves the final model and
objective state that :func:`galmoco.train.train` returned to ``DUMP/rank<r>.pt`` (to check that ranks agree).

Usage: ``torchrun --nproc_per_node=2 ddp_runner.py STORE RUN_DIR CONFIG.yaml DUMP``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from galmoco.config import load_config
from galmoco.train import train


def main(store: str, run_dir: str, config: str, dump: str) -> None:
    result = train(load_config(config), store, run_dir)
    torch.save(result.state, Path(dump) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
