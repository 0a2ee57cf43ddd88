"""Large CPU tensors on transparent huge pages: 512x fewer page faults per activation.

PyTorch's CPU tensors come from ``malloc``, and glibc serves every request above its mmap threshold (at
most 32 MiB) with a fresh ``mmap``, returned with ``munmap`` on free. Each large activation of a UNet call
or a decode is therefore faulted in again, 4 KiB at a time, on every call: about 465k page faults per
full-size UNet call at 64x64 px (docs/performance.md). With ``THP_MEM_ALLOC_ENABLE=1`` PyTorch asks for
transparent huge pages (``madvise(MADV_HUGEPAGE)``) on buffers of 2 MiB and more, so the same buffer costs
one fault per 2 MiB. Nothing else changes: the same bytes, the same kernels, memory returned on free.

(Keeping freed memory in the process instead, with glibc's ``M_MMAP_MAX = 0`` and no trimming, also
removes the faults but fragments the heap: a freed block that a small allocation lands in no longer fits
the next block of its size, and the footprint grows with every call. Measured in docs/performance.md.)

PyTorch reads the variable once, at its first CPU allocation, so it has to be set before ``import torch``;
the CLI does this in its entry point. A value the user already set wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_available() -> bool:
    """True when the kernel grants huge pages to regions that ask for them (``always`` or ``madvise``)."""
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def use_huge_pages_for_tensors() -> bool:
    """Ask PyTorch for huge pages on large CPU tensors; True when it will take effect in this process.

    Leaves a value the user set alone (``THP_MEM_ALLOC_ENABLE=0`` turns it off) and does nothing once
    torch is imported (it has read the variable by then) or where the kernel has no huge pages.
    """
    if THP_VARIABLE in os.environ:
        return os.environ[THP_VARIABLE] == "1"
    if "torch" in sys.modules or not huge_pages_available():
        return False
    os.environ[THP_VARIABLE] = "1"
    return True
