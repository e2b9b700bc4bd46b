"""torch.distributed plumbing: process-group set-up from torchrun or SLURM, gathers, shuffle-BN, teardown.

galmoco does not launch processes itself: ``torchrun`` (or ``srun``) does, and every process calls
:func:`init_distributed`, which reads the launcher's environment. The collectives here are the ones
MoCo needs (He et al. 2020, and the official ``moco/builder.py``): gathering keys from every rank
before they are enqueued, so that every rank's queue stays identical, and shuffling the key batch
across ranks so that batch-norm statistics cannot leak which key is the positive ("shuffle-BN").

Every function works in a single process without a process group (gathers return their input,
the shuffle is an identity), so single-device code calls them unconditionally.
"""

from __future__ import annotations

import gc
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from galmoco.errors import GalmocoError

__all__ = [
    "DistContext",
    "DistEnv",
    "RankBatchShuffle",
    "all_ranks_true",
    "average_across_ranks",
    "concat_all_gather",
    "detect_env",
    "find_free_port",
    "first_slurm_host",
    "init_distributed",
    "is_distributed",
    "is_main",
    "resolve_device",
    "rank",
    "shuffle_across_ranks",
    "teardown",
    "unshuffle_across_ranks",
    "world_size",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, as its launcher described it.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        master_addr: host of rank 0's rendezvous store (``None`` when torchrun's env gives it).
        master_port: its TCP port (``None`` likewise).
        launcher: ``"torchrun"``, ``"slurm"`` or ``"single"``.
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None
    master_port: int | None
    launcher: str


@dataclass(frozen=True)
class DistContext:
    """The result of :func:`init_distributed`: this process's place and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: no process group (one process)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes logs, TensorBoard and checkpoints."""
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``SLURM_JOB_NODELIST``), without calling ``scontrol``.

    Args:
        nodelist: e.g. ``"gpu[003-005,010],login1"`` or ``"node7"``.

    Returns:
        The first host name, keeping zero padding: ``"gpu003"``.
    """
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise GalmocoError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot find a host name in it")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launcher's environment: torchrun first, then an ``srun`` job step, else one process.

    torchrun (also ``srun torchrun``) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/
    ``MASTER_PORT``. A plain ``srun`` job step sets ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``
    and ``SLURM_STEP_ID``; the batch script itself has no step id, so running galmoco directly in an
    sbatch script (no srun) is one process, not a process group waiting for peers that never come.
    Under SLURM rank 0 is the node list's first host, on ``MASTER_PORT`` if set, else
    ``15000 + SLURM_JOB_ID % 20000`` (the same on every task of the job, different across jobs).

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        A :class:`DistEnv`.
    """
    env = os.environ if environ is None else environ
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")),
                           env.get("MASTER_ADDR"), int(env["MASTER_PORT"]) if "MASTER_PORT" in env else None,
                           "torchrun")
        if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and (
                "SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
            nodelist = (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
                        or env["SLURM_NODELIST"])
            port = (int(env["MASTER_PORT"]) if "MASTER_PORT" in env
                    else 15000 + int(env["SLURM_JOB_ID"]) % 20000)
            return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                           int(env.get("SLURM_LOCALID", "0")),
                           env.get("MASTER_ADDR") or first_slurm_host(nodelist), port, "slurm")
    except (KeyError, ValueError) as exc:
        raise GalmocoError(f"distributed launch environment is incomplete or malformed: {exc}") from exc
    return DistEnv(0, 1, 0, None, None, "single")


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistContext:
    """Join the process group the launcher set up (no-op in a single process) and pick the device.

    Args:
        device: ``"auto"`` (CUDA if available), ``"cuda"`` or ``"cpu"`` (``"cuda:N"`` counts as
            ``"cuda"``): on CUDA each process takes GPU ``local_rank``.
        backend: ``"nccl"`` or ``"gloo"``; default nccl on CUDA, gloo on CPU.
        timeout_s: collective timeout in seconds.

    Returns:
        A :class:`DistContext`.
    """
    env = detect_env()
    device = device.split(":")[0]
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cuda", "cpu"):
        raise GalmocoError(f"--device {device!r}: expected auto, cuda or cpu")
    if use_cuda and not torch.cuda.is_available():
        raise GalmocoError("--device cuda: no CUDA device is visible to this process")
    if use_cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise GalmocoError(
                f"local rank {env.local_rank} has no GPU: only {torch.cuda.device_count()} are visible")
        torch.cuda.set_device(env.local_rank)
        dev = torch.device("cuda", env.local_rank)
    else:
        dev = torch.device("cpu")
    if env.world_size == 1:
        return DistContext(0, 1, 0, dev, None)
    if env.launcher == "slurm":  # torch's env:// rendezvous reads these
        os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank),
                          MASTER_ADDR=str(env.master_addr), MASTER_PORT=str(env.master_port))
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s),
                                device_id=dev if backend == "nccl" else None)
    return DistContext(env.rank, env.world_size, env.local_rank, dev, backend)


def teardown() -> None:
    """Leave the process group cleanly.

    Callers must first drop their references to DDP-wrapped models (``del model``): the collectives'
    buffers they hold are then freed here by ``gc.collect()`` *before* ``destroy_process_group()``.
    Destroying the group while they are alive makes gloo abort at interpreter exit on some machines
    (about 40% of runs on ours), which turns a finished run into a failed exit status.
    """
    gc.collect()
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
    gc.collect()


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return rank() == 0


def all_ranks_true(flag: bool | torch.Tensor, device: torch.device | None = None) -> bool:
    """True when ``flag`` is true on every rank (e.g. "the loss is finite"), so that all ranks stop together.

    Args:
        flag: this rank's verdict.
        device: where the collective runs (this rank's device; CUDA for nccl).
    """
    value = torch.as_tensor(flag, dtype=torch.int32, device=device).reshape(1)
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def average_across_ranks(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same keys); ``values`` without a group."""
    if not is_distributed():
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=device))
    return [int(s.item()) for s in sizes]


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (no gradient), as MoCo's.

    Ranks may hold different numbers of rows (e.g. a short last batch): rows are padded to the
    largest count for the collective and trimmed after.

    Args:
        tensor: ``(n_rank, ...)`` on this rank's device (CUDA for nccl).

    Returns:
        ``(sum of n_rank, ...)``; ``tensor`` itself without a process group.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    biggest = max(sizes)
    if biggest != tensor.shape[0]:
        pad = tensor.new_zeros((biggest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle-BN's first half (MoCo's ``_batch_shuffle_ddp``): deal a random mix of the global batch.

    The global batch is gathered, permuted with one permutation drawn on rank 0 and broadcast, and
    each rank keeps as many rows as it gave; its key encoder's BN then sees images from other ranks,
    so the batch statistics carry no trace of which key pairs with which query.

    Args:
        x: this rank's key inputs ``(n, ...)``.

    Returns:
        ``(x_shuffled, idx_unshuffle)``: this rank's slice of the permuted global batch, and the
        global inverse permutation for :func:`unshuffle_across_ranks`. Without a process group,
        ``(x, arange(n))``.
    """
    if not is_distributed():
        return x, torch.arange(x.shape[0], device=x.device)
    x_all = concat_all_gather(x)
    perm = torch.randperm(x_all.shape[0], device=x.device) if is_main() else \
        torch.empty(x_all.shape[0], dtype=torch.long, device=x.device)
    dist.broadcast(perm, src=0)
    sizes = _gather_sizes(x.shape[0], x.device)
    start = sum(sizes[: rank()])
    return x_all[perm[start:start + x.shape[0]]], torch.argsort(perm)


@torch.no_grad()
def unshuffle_across_ranks(y: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Shuffle-BN's second half (MoCo's ``_batch_unshuffle_ddp``): return encoded keys to their owners.

    Args:
        y: this rank's encodings of its shuffled slice ``(n, ...)``.
        idx_unshuffle: the inverse permutation from :func:`shuffle_across_ranks`.

    Returns:
        ``(n, ...)``: the encodings of this rank's own inputs, in their original order.
    """
    if not is_distributed():
        return y[idx_unshuffle]
    y_all = concat_all_gather(y)
    sizes = _gather_sizes(y.shape[0], y.device)
    start = sum(sizes[: rank()])
    return y_all[idx_unshuffle[start:start + y.shape[0]]]


class RankBatchShuffle:
    """Shuffle-BN across ranks with the ``shuffle``/``unshuffle`` interface of
    :class:`galmoco.models.moco.BatchShuffle` (the distributed stand-in for ``LocalBatchShuffle``)."""

    def shuffle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`shuffle_across_ranks`."""
        return shuffle_across_ranks(x)

    def unshuffle(self, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """See :func:`unshuffle_across_ranks`."""
        return unshuffle_across_ranks(y, index)


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; otherwise ``torch.device(name)``, checked to exist here.

    Raises:
        GalmocoError: for a malformed name, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise GalmocoError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GalmocoError(f"device {name!r}: CUDA is not available here; use --device cpu or auto")
    return device
