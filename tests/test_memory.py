"""Freed memory kept in the process: a batch-sized block comes from the heap and stays there when freed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# a 64 MiB tensor allocated and freed; glibc's mallinfo2 says where it lived and what the heap kept
_SCRIPT = """
import ctypes, sys
import torch
from galmoco.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
          "keepcost")
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("no-mallinfo2"); sys.exit()
libc.mallinfo2.restype = Info
block = torch.ones(16 * 2**20)
mapped = libc.mallinfo2().hblkhd  # bytes in blocks of their own (mmap), handed back when freed
del block
print(applied, mapped, libc.mallinfo2().fordblks)  # fordblks: free bytes the heap keeps
"""
_ALLOCATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
MIB = 2**20


def _block(mode: str, **env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_SETTINGS}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout.split()
    if out == ["no-mallinfo2"]:
        pytest.skip("glibc without mallinfo2 (< 2.33)")
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_batch_sized_block_stays_in_the_heap():
    applied, mapped, kept = _block("keep")
    assert applied == "True"
    assert mapped < 64 * MIB <= kept  # served from the heap, and still there once freed
    _, mapped, kept = _block("default")
    assert mapped >= 64 * MIB > kept  # glibc's default: a block of its own, given back when freed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_an_allocator_chosen_by_the_user_is_left_alone():
    applied, mapped, _ = _block("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False" and mapped >= 64 * MIB
