"""Keep freed memory in the process, so batch-sized tensors are not page-faulted in again every step.

glibc's ``malloc`` serves blocks above a threshold (128 KiB, raised dynamically up to 32 MiB) with
``mmap`` and gives them back to the system when they are freed, and it trims the top of its heap beyond
128 KiB. A CPU training step allocates and frees tensors of several MiB (a batch of 128 4x64x64
float32 stamps is 8 MiB), so each step touches fresh pages and pays a page fault per 4 KiB. Measured on
a 2-core machine (benchmarks/RESULTS.md, fourteenth session): MoCo's data path (store read and
augmentations) ran at 2,600-4,100 images/s with glibc's defaults, varying from run to run, and at
5,500-6,400 with large blocks served from, and kept in, the heap; the training step 5-14% faster.
PyTorch's CPU performance guide reaches the same end by preloading jemalloc or tcmalloc; this is the
same thing for the system allocator, set from inside the process.

The price is that memory a run has freed is not returned to the system until the process ends: the
resident size stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

#: mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest value mallopt takes (an int): blocks up to 2 GiB come from the heap, which is never trimmed
_KEEP = 2**31 - 1
#: a user who set any of these has chosen the allocator's behaviour: leave it
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` serve large blocks from its heap and keep what is freed (``mallopt``).

    Once per process; nothing is done on other C libraries, or when the environment already sets the
    allocator (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES`` or
    ``LD_PRELOAD``, e.g. jemalloc).

    Returns:
        Whether the setting is in force.
    """
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and not any(os.environ.get(k) for k in _USER_SETTINGS):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # musl and others have no mallopt
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _applied = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
    return _applied
