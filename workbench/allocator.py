"""The C allocator, tuned for tensor work on a CPU: keep freed memory in the process.

glibc's malloc hands blocks above a size threshold straight back to the kernel when they are freed
(`munmap`, or trimming the top of the heap), so the next tensor of that size is fresh memory whose
every 4 KB page faults on first touch. A training step allocates and frees the same large tensors
(activations, logits, gradients) every time, so on a CPU it pays those page faults every step:
on a 2-core Xeon, the 02_pretraining step took 114-121 ms with glibc's defaults and 88-95 ms with
freed memory kept, and the loss of a 2048 x 2048-logit batch 24-27 ms against 11-12 ms.

`keep_freed_memory` (called when the workbench is imported) makes every block come from the heap
(no mmap: glibc caps the mmap threshold at 32 MB, so larger blocks would still be mapped and unmapped
each time) and raises the trim threshold to 2 GB, so freed blocks stay there for reuse. Blocks over
32 MB matter with large vocabularies: a model with a 50,304-token vocabulary and 256-wide embeddings
(a 51 MB embedding gradient every step) trained at 516-890 ms/iteration with only the 32 MB
threshold and 408-448 ms with no mmap (2.5-4.8 million page faults against 0.25 million, 2-core
Xeon, processes alternated); a 47 MB `torch.zeros` took 14-15 ms against 2.3-3.3. The cost is that
the process keeps up to its peak heap (that run's peak resident set: 980 against 1,073 MB);
PyTorch's CPU tuning guide gets the same effect by preloading jemalloc or tcmalloc, which a
notebook kernel cannot do. Threads other than the main one still map blocks larger than their
arena's 64 MB heaps (glibc falls back to mmap there). Elsewhere than Linux with glibc nothing
changes. `WORKBENCH_MALLOC=default` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc take every block from the heap and keep freed ones for reuse (see the module
    docstring); once per process.

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
    # The thresholds first, in this order: setting a trim threshold alone also freezes the mmap
    # threshold at its 128 KB default, which makes every large block an mmap (twice as slow as glibc's
    # defaults); then no mmap at all in the main arena, for the blocks above the 32 MB cap.
    _applied = all(libc.mallopt(param, value) for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_MMAP_MAX, 0)))
    return _applied
