"""The C allocator, tuned for tensor work on a CPU: keep freed memory in the process.

glibc's malloc hands blocks above a size threshold straight back to the kernel when they are freed
(`munmap`, or trimming the top of the heap), so the next tensor of that size is fresh memory whose
every 4 KB page faults on first touch. A training step allocates and frees the same large tensors
(activations, logits, gradients) every time, so on a CPU it pays those page faults every step:
on a 2-core Xeon, the 02_pretraining step took 114-121 ms with glibc's defaults and 88-95 ms with
freed memory kept, and the loss of a 2048 x 2048-logit batch 24-27 ms against 11-12 ms.

`keep_freed_memory` (called when the workbench is imported) raises the mmap threshold to glibc's
maximum, 32 MB, and the trim threshold to 2 GB: blocks up to 32 MB come from the heap and freed ones
stay there for reuse. The cost is that the process keeps up to its peak heap; PyTorch's CPU tuning
guide gets the same effect by preloading jemalloc or tcmalloc, which a notebook kernel cannot do.
Elsewhere than Linux with glibc nothing changes. `WORKBENCH_MALLOC=default` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MB for reuse (see the module docstring); once per process.

    Returns:
        True if the allocator is (now) tuned, False where it is not glibc or WORKBENCH_MALLOC=default.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("WORKBENCH_MALLOC") == "default" or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # Both, in this order: setting a trim threshold alone also freezes the mmap threshold at its
    # 128 KB default, which makes every large block an mmap (twice as slow as glibc's defaults).
    _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                         TRIM_THRESHOLD))
    return _applied
