"""Freed memory kept in the process: the batch-sized tensors of a step fault in fewer fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# ten steps that allocate and free batch-sized tensors (8 and 16 MiB), as an augmentation does
_SCRIPT = """
import resource, sys
import torch
from galmoco.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
def step():
    a = torch.randn(128, 4, 64, 64)
    return float(torch.cat([a, a * 2]).sum())
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
_ALLOCATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def _page_faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_SETTINGS}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_halves_the_page_faults_of_a_step():
    applied, kept = _page_faults("keep")
    _, default = _page_faults("default")
    assert applied == "True"
    assert default > 10_000  # glibc's defaults: the blocks go back to the system and fault in again
    assert kept < default / 2, (kept, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_an_allocator_chosen_by_the_user_is_left_alone():
    applied, _ = _page_faults("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
