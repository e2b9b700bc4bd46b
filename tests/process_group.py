"""A local stand-in for ``torchrun --standalone`` in tests: run a function in a real gloo process group."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from galmoco.distributed import find_free_port, init_distributed, teardown

__all__ = ["launch_local"]


def _local_entry(local_rank: int, fn: Callable[..., object], world: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(device="cpu", backend="gloo", timeout_s=120.0)
    try:
        fn(local_rank, *args)
    finally:
        teardown()


def launch_local(fn: Callable[..., object], world: int, *args: object) -> None:
    """Run ``fn(rank, *args)`` in ``world`` fresh CPU processes joined by a gloo group on 127.0.0.1.

    A small stand-in for ``torchrun --standalone``. ``fn`` must be importable
    (a module-level function) and should drop its models before returning (see :func:`teardown`).

    Args:
        fn: the per-process function; its first argument is the rank.
        world: number of processes.
        *args: further (picklable) arguments.

    Raises:
        torch.multiprocessing.ProcessRaisedException: when a worker raised (with its traceback).
    """
    torch.multiprocessing.spawn(_local_entry, args=(fn, world, find_free_port(), args), nprocs=world,
                                join=True)
